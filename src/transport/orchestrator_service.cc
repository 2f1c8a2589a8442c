#include "transport/orchestrator_service.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <set>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "core/job_config.h"
#include "core/model_state_file.h"
#include "core/mutex.h"
#include "core/version.h"
#include "secure/audit_log.h"
#include "transport/chunks.h"
#include "transport/grpc_logging.h"
#include "transport/task_phase.h"
#include "transport/tls.h"
#include "transport/versions.h"

namespace fedsilo::transport {

using secure::ParticipantKind;

using Stream = grpc::ServerReaderWriter<fedsilo::v1::OrchestratorMessage, fedsilo::v1::SiloMessage>;

// One open Connect stream. The stream is written by RunTask() (tasks) and by the
// reading thread (heartbeat echoes), one at a time under write_mu.
struct OrchestratorService::Session {
  std::string silo;
  secure::PeerIdentity peer;  // from its certificate, checked again before each task
  uint64_t id = 0;
  std::string release;  // what its hello says it runs
  Agreement versions;   // agreed from its hello; set before the session is shared
  Stream* stream = nullptr;
  Mutex write_mu;
  // False once Connect() is about to return and `stream` goes away.
  bool writable ABSL_GUARDED_BY(write_mu) = true;
  // The call's context, to cancel the stream from another thread; null once
  // Connect() is about to return. Never held during I/O (a write to a silo
  // that stopped reading may block while holding write_mu).
  Mutex context_mu;
  grpc::ServerContext* context ABSL_GUARDED_BY(context_mu) = nullptr;
  // model.torchscript values whose module this session has received.
  std::set<std::string> modules_sent ABSL_GUARDED_BY(write_mu);

  Mutex mu;
  CondVar cv;
  bool open ABSL_GUARDED_BY(mu) = true;  // the stream is there
  // The task (or secure-aggregation step) out, and how far it has got; only
  // MoveTo() changes it.
  TaskPhase phase ABSL_GUARDED_BY(mu) = TaskPhase::kIdle;
  // Counts the UploadRequests and the secure-aggregation steps sent, so that
  // the bytes of one that ended early (cancelled, timed out) are not taken
  // as the start of the next.
  uint64_t upload_id ABSL_GUARDED_BY(mu) = 0;
  uint64_t secure_id ABSL_GUARDED_BY(mu) = 0;
  // The task's run was cancelled: the silo has dropped its update, so it is
  // not asked for (Fetch() reports the cancellation instead).
  std::optional<Status> cancelled ABSL_GUARDED_BY(mu);
  std::string job_id ABSL_GUARDED_BY(mu);
  int round ABSL_GUARDED_BY(mu) = 0;
  std::string nonce ABSL_GUARDED_BY(mu);
  uint64_t update_bytes ABSL_GUARDED_BY(mu) = 0;
  // The most an update (or a secure-aggregation reply) of the task that is
  // out may announce, from what was sent; a silo that announces more breaks
  // the protocol and its stream is closed.
  uint64_t max_update_bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t max_secure_bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t largest_model_bytes ABSL_GUARDED_BY(mu) = 0;
  std::optional<StatusOr<FitReply>> result ABSL_GUARDED_BY(mu);
  std::optional<StatusOr<ModelState>> upload ABSL_GUARDED_BY(mu);
  // A secure-aggregation step's reply, once its payload is here.
  uint64_t secure_bytes ABSL_GUARDED_BY(mu) = 0;
  std::optional<StatusOr<std::string>> secure_result ABSL_GUARDED_BY(mu);
  // Why the orchestrator closed the stream (its certificate is no longer valid).
  std::optional<Status> dropped ABSL_GUARDED_BY(mu);

  // Moves the task along the phases' diagram (transport/task_phase.h). A
  // move it does not allow is a fault of the orchestrator's own: logged,
  // and the session stays where it was.
  bool MoveTo(TaskPhase to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!MayMove(phase, to)) {
      spdlog::error("silo '{}': session {} cannot go from '{}' to '{}'", silo, id,
                    std::string(TaskPhaseName(phase)), std::string(TaskPhaseName(to)));
      return false;
    }
    phase = to;
    return true;
  }

  bool Write(const fedsilo::v1::OrchestratorMessage& m) {
    MutexLock lock(&write_mu);
    return writable && Count(m) && stream->Write(m);
  }
  // Adds the message's size to the service's count (true, to chain).
  bool Count(const fedsilo::v1::OrchestratorMessage& m) {
    if (bytes_sent != nullptr) *bytes_sent += m.ByteSizeLong();
    return true;
  }
  std::atomic<uint64_t>* bytes_sent = nullptr;
};

// The update of one result, pulled from the silo on Fetch().
class OrchestratorService::RemoteUpdate : public UpdateSource {
 public:
  RemoteUpdate(std::shared_ptr<Session> session, std::chrono::milliseconds timeout)
      : session_(std::move(session)), timeout_(timeout) {}

  ~RemoteUpdate() override {
    if (fetched_) return;
    MutexLock lock(&session_->mu);  // never fetched: free the silo
    session_->MoveTo(TaskPhase::kIdle);
  }

  void Prefetch() override {
    if (requested_) return;
    requested_ = true;
    Session& s = *session_;
    fedsilo::v1::OrchestratorMessage request;
    {
      MutexLock lock(&s.mu);
      if (!s.open || s.cancelled.has_value()) return;  // Fetch() reports it
      if (!s.MoveTo(TaskPhase::kUploading)) return;    // Fetch() then fails
      ++s.upload_id;
      s.upload.reset();
      request.mutable_upload()->set_job_id(s.job_id);
      request.mutable_upload()->set_round(s.round);
      request.mutable_upload()->set_nonce(s.nonce);
    }
    sent_ = s.Write(request);
  }

  StatusOr<ModelState> Fetch() override {
    fetched_ = true;
    Session& s = *session_;
    {
      MutexLock lock(&s.mu);
      if (!s.open && !s.upload.has_value()) {
        s.MoveTo(TaskPhase::kIdle);
        return absl::UnavailableError(absl::StrCat("silo '", s.silo, "' left before its upload"));
      }
      if (s.cancelled.has_value() && s.phase != TaskPhase::kUploading) {
        s.MoveTo(TaskPhase::kIdle);
        return Annotate(*s.cancelled, absl::StrCat("silo '", s.silo, "'"));
      }
    }
    Prefetch();
    const bool sent = sent_;
    MutexLock lock(&s.mu);
    const auto until = std::chrono::steady_clock::now() + timeout_;
    while (sent && !s.upload.has_value() && s.open && s.cv.WaitUntil(&s.mu, until)) {
    }
    StatusOr<ModelState> result =
        s.upload.has_value() ? std::move(*s.upload)
        : !sent || !s.open   ? StatusOr<ModelState>(absl::UnavailableError("silo disconnected"))
                             : StatusOr<ModelState>(absl::DeadlineExceededError(absl::StrCat(
                                   "upload not finished within ", timeout_.count() / 1000.0, " s")));
    s.upload.reset();
    s.MoveTo(TaskPhase::kIdle);
    if (!result.ok()) return Annotate(result.status(), absl::StrCat("silo '", s.silo, "'"));
    return result;
  }

 private:
  std::shared_ptr<Session> session_;
  std::chrono::milliseconds timeout_;
  bool requested_ = false;  // the UploadRequest went out
  bool sent_ = false;       // ... successfully
  bool fetched_ = false;
};

OrchestratorService::OrchestratorService(std::string ca_pem, SiloSessionListener* listener,
                                         Clock clock, bool insecure)
    : auth_{std::move(ca_pem), std::move(clock), insecure, nullptr}, listener_(listener) {
  sweeper_ = std::thread([this] { SweepLoop(); });
}

OrchestratorService::~OrchestratorService() {
  {
    MutexLock lock(&sweep_mu_);
    stopping_ = true;
  }
  sweep_cv_.SignalAll();
  sweeper_.join();
}

void OrchestratorService::set_validity_sweep(std::chrono::milliseconds every) {
  {
    MutexLock lock(&sweep_mu_);
    sweep_ = every;
  }
  sweep_cv_.SignalAll();
}

void OrchestratorService::Drop(Session& session, const Status& why) {
  {
    MutexLock lock(&session.mu);
    if (!session.dropped.has_value()) session.dropped = why;
  }
  // TryCancel also ends a write blocked on a silo that stopped reading.
  MutexLock lock(&session.context_mu);
  if (session.context != nullptr) session.context->TryCancel();
}

void OrchestratorService::SweepLoop() {
  for (;;) {
    {
      MutexLock lock(&sweep_mu_);
      if (!stopping_) sweep_cv_.WaitFor(&sweep_mu_, sweep_);
      if (stopping_) return;
    }
    for (const std::shared_ptr<Session>& s : Sessions()) {
      if (Status valid = auth_.StillValid(s->peer); !valid.ok()) Drop(*s, valid);
    }
  }
}

std::vector<std::string> OrchestratorService::ConnectedSilos() const {
  MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, session] : sessions_) names.push_back(name);
  return names;
}

std::vector<std::shared_ptr<OrchestratorService::Session>> OrchestratorService::Sessions() const {
  MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> sessions;
  for (const auto& [name, session] : sessions_) sessions.push_back(session);
  return sessions;
}

bool OrchestratorService::IsConnected(const std::string& silo) const {
  MutexLock lock(&mu_);
  return sessions_.count(silo) > 0;
}

void OrchestratorService::CancelRun(const std::string& run_id, const std::string& reason) {
  for (const std::shared_ptr<Session>& s : Sessions()) {
    bool ours;
    {
      MutexLock lock(&s->mu);
      ours = IsBusy(s->phase) && s->job_id == run_id;
      if (ours) s->cancelled = absl::CancelledError(reason);
      if (ours && s->phase == TaskPhase::kUploading && !s->upload.has_value()) {
        s->upload = absl::CancelledError(reason);
      }
      if (ours && IsSecureStep(s->phase) && !s->secure_result.has_value()) {
        s->secure_result = absl::CancelledError(reason);
      }
    }
    if (!ours) continue;
    Deliver(*s, absl::CancelledError(reason));
    s->cv.SignalAll();
    fedsilo::v1::OrchestratorMessage abort;
    abort.mutable_abort()->set_job_id(run_id);
    abort.mutable_abort()->set_reason(reason);
    s->Write(abort);
  }
}

void OrchestratorService::RequestAuditHeads(const std::string& job_id) {
  if (!audit_head_sink_) return;
  fedsilo::v1::OrchestratorMessage ask;
  ask.mutable_audit_head_request()->set_job_id(job_id);
  for (const std::shared_ptr<Session>& s : Sessions()) s->Write(ask);
}

void OrchestratorService::Deliver(Session& session, StatusOr<FitReply> result) {
  {
    MutexLock lock(&session.mu);
    if (!IsBusy(session.phase) || session.result.has_value()) return;
    session.result = std::move(result);
  }
  session.cv.SignalAll();
}

std::shared_ptr<const std::string> OrchestratorService::ModelBytes(const TaskRequest& request) {
  // A statistics task carries none: on the wire, the empty model (which
  // silos of every version parse).
  static const ModelState* const kNoModel = new ModelState();
  const ModelState* model = ModelOf(request.task);
  if (model == nullptr) model = kNoModel;
  const TaskKind kind = KindOf(request.task);
  MutexLock lock(&model_mu_);
  if (model_bytes_ == nullptr || model_key_ != model || model_key_run_ != request.run_id ||
      model_key_round_ != request.round || model_key_task_ != kind) {
    model_bytes_.reset();  // release the last round's bytes before making new ones
    model_bytes_ = std::make_shared<const std::string>(SerializeModelState(*model));
    model_key_ = model;
    model_key_run_ = request.run_id;
    model_key_round_ = request.round;
    model_key_task_ = kind;
  }
  return model_bytes_;
}

StatusOr<std::shared_ptr<OrchestratorService::Session>> OrchestratorService::Claim(
    const std::string& silo, const std::string& run_id, int round, bool securing) {
  std::shared_ptr<Session> session;
  {
    MutexLock lock(&mu_);
    auto it = sessions_.find(silo);
    if (it != sessions_.end()) session = it->second;
  }
  if (session == nullptr) {
    return absl::UnavailableError(absl::StrCat("silo '", silo, "' is not connected"));
  }
  // A silo revoked (or expired) since its last message gets no task: its
  // stream is closed instead.
  if (Status valid = auth_.StillValid(session->peer); !valid.ok()) {
    Drop(*session, valid);
    return absl::UnavailableError(absl::StrCat("silo '", silo, "' was refused: ", valid.message()));
  }
  std::string nonce(16, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), 16) != 1) {
    return absl::InternalError("no randomness for a task nonce");
  }
  MutexLock lock(&session->mu);
  if (!session->open) return absl::UnavailableError(absl::StrCat("silo '", silo, "' left"));
  if (IsBusy(session->phase)) {
    return absl::FailedPreconditionError(absl::StrCat("silo '", silo, "' is busy with a task"));
  }
  session->MoveTo(securing ? TaskPhase::kSecureSent : TaskPhase::kTaskSent);
  if (securing) ++session->secure_id;
  session->job_id = run_id;
  session->round = round;
  session->nonce = std::move(nonce);
  session->result.reset();
  session->secure_result.reset();
  session->cancelled.reset();
  return session;
}

StatusOr<FitReply> OrchestratorService::RunTask(const std::string& silo, const TaskRequest& request,
                                                std::chrono::milliseconds timeout) {
  FEDSILO_RETURN_IF_ERROR(CheckCarriesItsModel(request.task));
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                           Claim(silo, request.run_id, request.round, /*securing=*/false));
  std::string nonce;
  {
    MutexLock lock(&session->mu);
    nonce = session->nonce;
  }
  const std::shared_ptr<const std::string> model_bytes = ModelBytes(request);
  const std::string& model = *model_bytes;
  {
    // An update has the model's layout; statistics and scores are small.
    MutexLock lock(&session->mu);
    session->max_update_bytes = std::holds_alternative<FitTask>(request.task)
                                    ? 2 * static_cast<uint64_t>(model.size()) + (1 << 20)
                                    : kMaxSmallReplyBytes;
    session->largest_model_bytes = std::max<uint64_t>(session->largest_model_bytes, model.size());
  }
  fedsilo::v1::OrchestratorMessage header;
  fedsilo::v1::TaskHeader* task = header.mutable_task();
  task->set_job_id(request.run_id);
  task->set_round(request.round);
  task->set_nonce(nonce);
  task->set_seed(request.seed);
  switch (KindOf(request.task)) {
    case TaskKind::kFit:
      task->set_kind(fedsilo::v1::TASK_KIND_FIT);
      break;
    case TaskKind::kStatistics:
      task->set_kind(fedsilo::v1::TASK_KIND_STATISTICS);
      break;
    case TaskKind::kEvaluate:
      task->set_kind(fedsilo::v1::TASK_KIND_EVALUATE);
      break;
  }
  // In the job schema the silo reads; a job it cannot read fails this silo's
  // task, naming what to upgrade.
  StatusOr<std::string> job_yaml =
      JobForSilo(*request.job, silo, session->release, session->versions.job_schema);
  if (!job_yaml.ok()) {
    MutexLock lock(&session->mu);
    session->MoveTo(TaskPhase::kIdle);
    return job_yaml.status();
  }
  task->set_job_yaml(*std::move(job_yaml));
  task->set_job_schema(session->versions.job_schema);
  task->set_model_bytes(model.size());
  bool sent;
  {
    MutexLock lock(&session->write_mu);
    // A TorchScript module goes once per session: the silo keeps it.
    const std::string& module_name = request.job->model.torchscript;
    const bool ship = request.torchscript != nullptr && !session->modules_sent.count(module_name);
    if (ship) task->set_torchscript(*request.torchscript);
    sent = session->writable && session->Count(header) && session->stream->Write(header) &&
           ForEachChunk(model, [&](const fedsilo::v1::Chunk& c) {
             fedsilo::v1::OrchestratorMessage m;
             *m.mutable_chunk() = c;
             return session->Count(m) && session->stream->Write(m);
           });
    if (sent && ship) session->modules_sent.insert(module_name);
  }
  MutexLock lock(&session->mu);
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (sent && !session->result.has_value() && session->cv.WaitUntil(&session->mu, until)) {
  }
  StatusOr<FitReply> result =
      !sent ? StatusOr<FitReply>(absl::UnavailableError("sending the task failed"))
      : session->result.has_value()
          ? std::move(*session->result)
          : StatusOr<FitReply>(absl::DeadlineExceededError(absl::StrCat(
                "no result within ", timeout.count() / 1000.0, " s (federation.round_timeout)")));
  session->result.reset();
  if (!result.ok()) {
    session->MoveTo(TaskPhase::kIdle);
  } else {
    result->source = std::make_shared<RemoteUpdate>(session, timeout);
  }
  if (!result.ok()) return Annotate(result.status(), absl::StrCat("silo '", silo, "'"));
  return result;
}

StatusOr<std::string> OrchestratorService::SecureStep(const std::string& silo,
                                                      const SecureStepRequest& request,
                                                      std::chrono::milliseconds timeout) {
  fedsilo::v1::OrchestratorMessage message;
  fedsilo::v1::SecureStep* step = message.mutable_secure();
  step->set_job_id(request.run_id);
  step->set_round(request.round);
  step->set_payload(request.payload);
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                           Claim(silo, request.run_id, request.round, /*securing=*/true));
  // A masked input is the model's values in fixed point (at most eight bytes
  // each); shares and keys are small.
  return Step(*session, std::move(message), /*max_reply_bytes=*/0, timeout);
}

StatusOr<std::string> OrchestratorService::VerticalStep(const std::string& silo,
                                                        const VerticalStepRequest& request,
                                                        std::chrono::milliseconds timeout) {
  fedsilo::v1::OrchestratorMessage message;
  fedsilo::v1::VerticalStep* step = message.mutable_vertical();
  step->set_job_id(request.run_id);
  step->set_payload(request.payload);
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                           Claim(silo, request.run_id, /*round=*/0, /*securing=*/true));
  // A silo that cannot read the step, or the job it opens, is named, as for
  // a task's job, and its session freed.
  Status readable = session->versions.protocol < kVerticalProtocolVersion
                        ? absl::FailedPreconditionError(absl::StrCat(
                              "silo '", silo, "' runs ", session->release,
                              ", which speaks protocol ", session->versions.protocol,
                              "; vertical jobs need protocol ", kVerticalProtocolVersion,
                              " (fedsilo ", kVerticalRelease, "): upgrade silo '", silo, "'"))
                        : absl::OkStatus();
  if (readable.ok() && request.job != nullptr) {
    StatusOr<std::string> job_yaml =
        JobForSilo(*request.job, silo, session->release, session->versions.job_schema);
    readable = job_yaml.status();
    if (job_yaml.ok()) {
      step->set_job_yaml(*std::move(job_yaml));
      step->set_job_schema(session->versions.job_schema);
    }
  }
  if (!readable.ok()) {
    MutexLock lock(&session->mu);
    session->MoveTo(TaskPhase::kIdle);
    return readable;
  }
  return Step(*session, std::move(message), std::max<uint64_t>(request.max_reply_bytes, 1),
              timeout);
}

StatusOr<std::string> OrchestratorService::Step(Session& session,
                                                fedsilo::v1::OrchestratorMessage message,
                                                uint64_t max_reply_bytes,
                                                std::chrono::milliseconds timeout) {
  const std::string& silo = session.silo;
  {
    MutexLock lock(&session.mu);
    if (message.has_secure()) {
      message.mutable_secure()->set_nonce(session.nonce);
    } else {
      message.mutable_vertical()->set_nonce(session.nonce);
    }
    session.max_secure_bytes = max_reply_bytes > 0
                                   ? max_reply_bytes
                                   : 2 * session.largest_model_bytes + kMaxSmallReplyBytes;
  }
  const bool sent = session.Write(message);
  MutexLock lock(&session.mu);
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (sent && !session.secure_result.has_value() && session.open &&
         session.cv.WaitUntil(&session.mu, until)) {
  }
  const char* what = message.has_secure() ? "secure-aggregation reply" : "vertical-step reply";
  StatusOr<std::string> result =
      session.secure_result.has_value() ? std::move(*session.secure_result)
      : !sent || !session.open ? StatusOr<std::string>(absl::UnavailableError("silo disconnected"))
                               : StatusOr<std::string>(absl::DeadlineExceededError(
                                     absl::StrCat("no ", what, " within ", timeout.count() / 1000.0,
                                                  " s (federation.round_timeout)")));
  session.secure_result.reset();
  session.MoveTo(TaskPhase::kIdle);
  if (!result.ok()) return Annotate(result.status(), absl::StrCat("silo '", silo, "'"));
  return result;
}

grpc::Status OrchestratorService::WhoAmI(grpc::ServerContext* context,
                                         const fedsilo::v1::WhoAmIRequest* /*request*/,
                                         fedsilo::v1::WhoAmIReply* reply) {
  StatusOr<secure::PeerIdentity> peer = auth_.Authenticate(
      *context, {ParticipantKind::kSilo, ParticipantKind::kUser, ParticipantKind::kOrchestrator});
  if (!peer.ok()) {
    spdlog::warn("refused {}: {}", context->peer(), std::string(peer.status().message()));
    return ToGrpcStatus(peer.status());
  }
  reply->set_name(peer->name);
  reply->set_kind(std::string(secure::ParticipantKindName(peer->kind)));
  reply->set_federation(peer->federation);
  reply->set_not_after_unix(std::chrono::system_clock::to_time_t(peer->not_after));
  reply->set_server_version(FedsiloRelease());
  return grpc::Status::OK;
}

// What one Connect stream reads, message by message, once its session is
// open: results, update and secure-aggregation bytes, failures, heartbeats
// and audit log heads. Lives on the stream's reading thread.
class OrchestratorService::SiloStream {
 public:
  SiloStream(OrchestratorService* service, std::shared_ptr<Session> session)
      : service_(service), session_(std::move(session)), silo_(session_->silo) {}

  // Handles one message; an error breaks the protocol and closes the stream.
  Status Handle(const fedsilo::v1::SiloMessage& message);

 private:
  Status OnResult(const fedsilo::v1::ResultHeader& r);
  Status OnSecureReply(const fedsilo::v1::SecureReply& r);
  void OnChunk(const fedsilo::v1::Chunk& chunk);
  // A chunk of the secure-aggregation reply being received; false when no
  // reply is being received.
  bool OnSecureChunk(const fedsilo::v1::Chunk& chunk);
  void OnFailed(const fedsilo::v1::TaskFailed& f);
  Status OnAuditHead(const fedsilo::v1::AuditHead& h);
  // Ends the secure-aggregation step that is out with `outcome`, once.
  void FinishSecure(StatusOr<std::string> outcome);

  OrchestratorService* service_;
  std::shared_ptr<Session> session_;
  const std::string& silo_;
  double head_allowance_ = 20;  // audit log heads this stream may still send now
  std::chrono::steady_clock::time_point head_counted_ = std::chrono::steady_clock::now();
  ChunkAssembler update_;    // the upload being received
  uint64_t update_for_ = 0;  // ... for this Session::upload_id
  ChunkAssembler secure_;    // a secure-aggregation reply being received
  uint64_t secure_for_ = 0;  // ... for this Session::secure_id
};

Status OrchestratorService::SiloStream::Handle(const fedsilo::v1::SiloMessage& message) {
  switch (message.body_case()) {
    case fedsilo::v1::SiloMessage::kHeartbeat: {
      service_->listener_->OnHeartbeat(silo_, session_->id);
      fedsilo::v1::OrchestratorMessage echo;
      echo.mutable_heartbeat()->set_unix_millis(message.heartbeat().unix_millis());
      if (!session_->Write(echo)) return absl::UnavailableError("write failed");
      return absl::OkStatus();
    }
    case fedsilo::v1::SiloMessage::kResult:
      return OnResult(message.result());
    case fedsilo::v1::SiloMessage::kSecure:
      return OnSecureReply(message.secure());
    case fedsilo::v1::SiloMessage::kChunk:
      if (!OnSecureChunk(message.chunk())) OnChunk(message.chunk());
      return absl::OkStatus();
    case fedsilo::v1::SiloMessage::kFailed:
      OnFailed(message.failed());
      return absl::OkStatus();
    case fedsilo::v1::SiloMessage::kAuditHead:
      return OnAuditHead(message.audit_head());
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected message (field ", message.body_case(), ") from silo '", silo_, "'"));
  }
}

Status OrchestratorService::SiloStream::OnResult(const fedsilo::v1::ResultHeader& r) {
  Session& session = *session_;
  bool fresh;
  uint64_t most = 0;
  {
    MutexLock lock(&session.mu);
    fresh = session.phase == TaskPhase::kTaskSent && r.job_id() == session.job_id &&
            r.round() == session.round && r.nonce() == session.nonce;
    most = session.max_update_bytes;
    if (fresh && r.update_bytes() <= most) {
      session.MoveTo(TaskPhase::kHolding);
      session.update_bytes = r.update_bytes();
    }
  }
  if (fresh && r.update_bytes() > most) {
    return absl::InvalidArgumentError(
        absl::StrCat("silo '", silo_, "' announced an update of ", r.update_bytes(),
                     " bytes for a task whose update is at most ", most, " bytes"));
  }
  if (!fresh) {
    spdlog::warn(
        "silo '{}': result for job '{}' round {} does not answer the task that "
        "is out (stale or replayed); ignored",
        silo_, r.job_id(), r.round());
    return absl::OkStatus();
  }
  FitReply reply;
  reply.num_examples = r.num_examples();
  reply.metrics.insert(r.metrics().begin(), r.metrics().end());
  reply.metrics_private = r.metrics_private();
  service_->Deliver(session, std::move(reply));
  return absl::OkStatus();
}

Status OrchestratorService::SiloStream::OnSecureReply(const fedsilo::v1::SecureReply& r) {
  Session& session = *session_;
  bool fresh;
  const uint64_t bytes = r.payload_bytes();
  uint64_t most = 0;
  {
    MutexLock lock(&session.mu);
    fresh = session.phase == TaskPhase::kSecureSent && !session.secure_result.has_value() &&
            r.job_id() == session.job_id && r.round() == session.round &&
            r.nonce() == session.nonce && session.MoveTo(TaskPhase::kSecureReceiving);
    if (fresh) secure_for_ = session.secure_id;
    most = session.max_secure_bytes;
  }
  if (fresh && bytes > most) {
    Status why = absl::InvalidArgumentError(
        absl::StrCat("silo '", silo_, "' announced a secure-aggregation reply of ", bytes,
                     " bytes; at most ", most, " are expected"));
    FinishSecure(why);
    return why;
  }
  if (!fresh) {
    spdlog::warn("silo '{}': secure-aggregation reply that answers no step; ignored", silo_);
  } else if (bytes == 0) {
    FinishSecure(std::string());
  } else {
    secure_.Begin(bytes, absl::StrCat("secure-aggregation reply from silo '", silo_, "'"));
  }
  return absl::OkStatus();
}

bool OrchestratorService::SiloStream::OnSecureChunk(const fedsilo::v1::Chunk& chunk) {
  if (secure_.active()) {
    // A step that ended without all its bytes leaves them behind.
    MutexLock lock(&session_->mu);
    if (!IsSecureStep(session_->phase) || session_->secure_id != secure_for_ ||
        session_->secure_result.has_value()) {
      secure_ = ChunkAssembler();
    }
  }
  if (!secure_.active()) return false;
  Status added = secure_.Add(chunk);
  if (!added.ok()) {
    secure_ = ChunkAssembler();
    FinishSecure(added);
  } else if (secure_.complete()) {
    FinishSecure(secure_.Take());
  }
  return true;
}

void OrchestratorService::SiloStream::OnChunk(const fedsilo::v1::Chunk& chunk) {
  Session& session = *session_;
  uint64_t expected = 0, upload_id = 0;
  {
    MutexLock lock(&session.mu);
    if (session.phase != TaskPhase::kUploading || session.upload.has_value()) {
      spdlog::warn("silo '{}': update bytes nobody asked for; ignored", silo_);
      update_ = ChunkAssembler();  // what an ended upload left: not kept
      return;
    }
    expected = session.update_bytes;
    upload_id = session.upload_id;
  }
  if (!update_.active() || update_for_ != upload_id) {
    update_.Begin(expected, absl::StrCat("update from silo '", silo_, "'"));
    update_for_ = upload_id;
  }
  Status added = update_.Add(chunk);
  std::optional<StatusOr<ModelState>> outcome;
  if (!added.ok()) {
    outcome = added;
    update_ = ChunkAssembler();  // a model's worth of refused bytes, freed
  } else if (update_.complete()) {
    StatusOr<ModelFile> file =
        ParseModelState(update_.Take(), absl::StrCat("update from '", silo_, "'"));
    outcome = file.ok() ? StatusOr<ModelState>(std::move(file->state))
                        : StatusOr<ModelState>(file.status());
  }
  if (!outcome.has_value()) return;
  {
    MutexLock lock(&session.mu);
    session.upload = std::move(*outcome);
  }
  session.cv.SignalAll();
}

void OrchestratorService::SiloStream::OnFailed(const fedsilo::v1::TaskFailed& f) {
  bool matches, securing;
  {
    MutexLock lock(&session_->mu);
    matches = IsBusy(session_->phase) && f.nonce() == session_->nonce;
    securing = IsSecureStep(session_->phase);
  }
  if (matches && securing) {
    FinishSecure(absl::InternalError(f.reason()));
  } else if (matches) {
    service_->Deliver(*session_, absl::InternalError(f.reason()));
  }
}

Status OrchestratorService::SiloStream::OnAuditHead(const fedsilo::v1::AuditHead& h) {
  if (!service_->audit_head_sink_ || service_->audit_head_checker_ == nullptr) {
    return absl::OkStatus();  // not kept here
  }
  // At most 20 at once and one more every 10 s per stream are even looked
  // at: a signature check costs, and a silo sends a few an hour.
  const auto now = std::chrono::steady_clock::now();
  head_allowance_ = std::min(
      20.0, head_allowance_ + std::chrono::duration<double>(now - head_counted_).count() / 10);
  head_counted_ = now;
  if (head_allowance_ < 1) return absl::OkStatus();
  head_allowance_ -= 1;
  // Whose head it is comes from the stream's certificate; the signature must
  // say the same.
  secure::SignedAuditHead head;
  head.federation = session_->peer.federation;
  head.participant = silo_;
  head.head = {h.entries(), h.hash()};
  head.unix_millis = h.unix_millis();
  head.certificate_pem = h.certificate();
  head.signature = h.signature();
  Status checked =
      secure::CheckAuditHead(head, *service_->audit_head_checker_, ParticipantKind::kSilo);
  if (!checked.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("its audit log head: ", checked.message()));
  }
  service_->audit_head_sink_(head);
  return absl::OkStatus();
}

void OrchestratorService::SiloStream::FinishSecure(StatusOr<std::string> outcome) {
  {
    MutexLock lock(&session_->mu);
    if (!IsSecureStep(session_->phase) || session_->secure_result.has_value()) return;
    session_->secure_result = std::move(outcome);
  }
  session_->cv.SignalAll();
}

grpc::Status OrchestratorService::Connect(grpc::ServerContext* context, Stream* stream) {
  StatusOr<secure::PeerIdentity> peer = auth_.Authenticate(*context, {ParticipantKind::kSilo});
  if (!peer.ok()) {
    spdlog::warn("refused silo stream from {}: {}", context->peer(),
                 std::string(peer.status().message()));
    return ToGrpcStatus(peer.status());
  }
  const std::string address = context->peer();  // (gone once the stream is cancelled)
  std::shared_ptr<Session> session;
  if (grpc::Status opened = OpenSession(context, stream, *peer, address, session);
      !opened.ok() || session == nullptr) {
    return opened;
  }
  SiloStream reader(this, session);
  Status why;
  fedsilo::v1::SiloMessage message;
  // Whatever a message does -- even throw -- the clean-up below runs.
  try {
    while (why.ok() && stream->Read(&message)) {
      bytes_received_ += message.ByteSizeLong();
      // A silo heartbeats every few seconds: an expired or revoked
      // certificate loses its stream within that, before anything it sent
      // is taken.
      if (Status valid = auth_.StillValid(*peer); !valid.ok()) {
        why = valid;
        break;
      }
      why = reader.Handle(message);
    }
  } catch (const std::exception& e) {
    why = absl::InternalError(
        absl::StrCat("handling silo '", session->silo, "''s stream: ", e.what()));
  }
  return CloseSession(session, *context, address, why);
}

grpc::Status OrchestratorService::OpenSession(grpc::ServerContext* context, Stream* stream,
                                              const secure::PeerIdentity& peer,
                                              const std::string& address,
                                              std::shared_ptr<Session>& opened) {
  const std::string& silo = peer.name;
  fedsilo::v1::SiloMessage message;
  if (!stream->Read(&message)) return grpc::Status::OK;  // closed before saying hello
  if (message.body_case() != fedsilo::v1::SiloMessage::kHello) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on Connect must be SiloHello");
  }
  // Versions: the newest both ends know, or no session.
  StatusOr<PeerVersions> versions = VersionsOf(message.hello());
  StatusOr<Agreement> agreed =
      versions.ok() ? Negotiate(silo, *versions) : StatusOr<Agreement>(versions.status());
  if (!agreed.ok()) {
    spdlog::warn("refused silo '{}' from {}: {}", silo, address,
                 std::string(agreed.status().message()));
    return ToGrpcStatus(agreed.status());
  }
  auto session = std::make_shared<Session>();
  session->release = versions->release;
  session->versions = *agreed;
  session->bytes_sent = &bytes_sent_;
  session->silo = silo;
  session->peer = peer;
  {
    MutexLock lock(&session->context_mu);
    session->context = context;
  }
  session->id = next_session_.fetch_add(1);
  session->stream = stream;
  std::shared_ptr<Session> replaced;
  {
    MutexLock lock(&mu_);
    replaced = std::exchange(sessions_[silo], session);
  }
  if (replaced != nullptr) Deliver(*replaced, absl::UnavailableError("the silo reconnected"));
  const std::vector<std::string> datasets(message.hello().datasets().begin(),
                                          message.hello().datasets().end());
  spdlog::info("silo '{}' connected from {} (session {}; {}, protocol {}, job schema {})", silo,
               address, session->id, session->release, agreed->protocol, agreed->job_schema);
  listener_->OnConnected(silo, session->id, datasets);
  opened = std::move(session);
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::CloseSession(const std::shared_ptr<Session>& session,
                                               grpc::ServerContext& context,
                                               const std::string& address, Status why) {
  const std::string& silo = session->silo;
  if (why.ok()) {
    MutexLock lock(&session->mu);
    if (session->dropped.has_value()) why = *session->dropped;
  }
  if (absl::IsPermissionDenied(why)) {
    spdlog::warn("silo '{}' ({}): its stream is closed: {}", silo, address,
                 std::string(why.message()));
  } else if (!why.ok() && !absl::IsUnavailable(why)) {
    spdlog::warn("silo '{}' ({}) broke the protocol; its stream is closed: {}", silo, address,
                 std::string(why.message()));
  }
  if (why.ok()) {
    why = context.IsCancelled() ? absl::CancelledError("stream cancelled")
                                : absl::UnavailableError("stream closed by the silo");
  }
  {
    MutexLock lock(&session->mu);
    session->open = false;
  }
  session->cv.SignalAll();  // wakes an upload that waits
  Deliver(*session, absl::UnavailableError(absl::StrCat("silo disconnected: ", why.message())));
  {
    MutexLock lock(&mu_);
    auto it = sessions_.find(silo);
    if (it != sessions_.end() && it->second == session) sessions_.erase(it);
  }
  {
    MutexLock context_lock(&session->context_mu);
    session->context = nullptr;
  }
  {
    // A RunTask() may be writing to the stream: wait for it, and bar later ones.
    MutexLock write_lock(&session->write_mu);
    session->writable = false;
  }
  listener_->OnDisconnected(silo, session->id, why);
  spdlog::info("silo '{}' disconnected (session {}): {}", silo, session->id,
               std::string(why.message()));
  return absl::IsInvalidArgument(why) || absl::IsPermissionDenied(why) ? ToGrpcStatus(why)
                                                                       : grpc::Status::OK;
}

void ApplyServerLimits(grpc::ServerBuilder& builder) {
  // Keepalive pings find silos whose connection died without a FIN.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // A submitted job may carry its TorchScript module.
  builder.SetMaxReceiveMessageSize(static_cast<int>(kMaxTorchScriptBytes + (1 << 20)));
}

StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& address, std::shared_ptr<grpc::ServerCredentials> credentials,
    const std::vector<grpc::Service*>& services) {
  RouteGrpcLogs(/*peer_addresses=*/true);  // so that refused handshakes name their peer
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, std::move(credentials), &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  ApplyServerLimits(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve on ", address));
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(server), port));
}

GrpcServer::~GrpcServer() { Shutdown(); }

void GrpcServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
}

}  // namespace fedsilo::transport
