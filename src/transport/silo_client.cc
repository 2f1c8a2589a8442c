#include "transport/silo_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/job_config.h"
#include "core/job_schema.h"
#include "core/model_state_file.h"
#include "core/mutex.h"
#include "core/unix_time.h"
#include "core/version.h"
#include "transport/backoff.h"
#include "transport/chunks.h"
#include "transport/tls.h"
#include "transport/versions.h"

namespace fedsilo::transport {
namespace {

// TaskFailed answering `task` with the reason `why`.
fedsilo::v1::SiloMessage TaskFailedMessage(const fedsilo::v1::TaskHeader& task, const Status& why) {
  fedsilo::v1::SiloMessage m;
  m.mutable_failed()->set_job_id(task.job_id());
  m.mutable_failed()->set_round(task.round());
  m.mutable_failed()->set_nonce(task.nonce());
  m.mutable_failed()->set_reason(std::string(why.message()));
  return m;
}

}  // namespace

SiloClient::SiloClient(std::shared_ptr<grpc::ChannelCredentials> credentials,
                       SiloClientOptions options, SiloHandler* handler)
    : credentials_(std::move(credentials)), options_(std::move(options)), handler_(handler) {}

std::unique_ptr<fedsilo::v1::Orchestrator::Stub> SiloClient::NewStub() const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Not shared with earlier channels, whose connection may be in backoff.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // A task may carry the job's TorchScript module.
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxTorchScriptBytes + (1 << 20)));
  return fedsilo::v1::Orchestrator::NewStub(
      grpc::CreateCustomChannel(options_.target, credentials_, args));
}

SiloClient::~SiloClient() { Stop(); }

void SiloClient::Stop() {
  MutexLock lock(&mu_);
  stopping_ = true;
  if (active_ != nullptr) active_->TryCancel();
  cv_.SignalAll();
}

bool SiloClient::SleepUnlessStopped(std::chrono::milliseconds d) {
  MutexLock lock(&mu_);
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stopping_ && cv_.WaitUntil(&mu_, until)) {
  }
  return !stopping_;
}

StatusOr<fedsilo::v1::WhoAmIReply> SiloClient::WhoAmI(std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  if (!options_.insecure_name.empty()) {
    AddInsecureIdentity(context, options_.insecure_name, secure::ParticipantKind::kSilo);
  }
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  fedsilo::v1::WhoAmIReply reply;
  grpc::Status status = NewStub()->WhoAmI(&context, fedsilo::v1::WhoAmIRequest(), &reply);
  if (!status.ok()) return Annotate(FromGrpcStatus(status), options_.target);
  return reply;
}

Status SiloClient::Run() {
  // Seeded afresh per silo, so that silos do not share a jitter sequence.
  ReconnectBackoff backoff(options_.initial_backoff, options_.max_backoff, std::random_device{}());
  Status last;
  std::string same_reason;  // the certificate problem of the last attempts
  int same = 0;
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (stopping_) return last;
    }
    const int before = sessions_.load();
    last = RunSession();
    const bool opened = sessions_.load() > before;
    if (opened) backoff.Reset();  // it had connected
    {
      MutexLock lock(&mu_);
      if (stopping_) return absl::OkStatus();
    }
    // Why, in words: the orchestrator's own refusal, or a fresh look at what
    // fails when no session opened (gRPC says only "Socket closed").
    ConnectionDiagnosis why{ConnectionDiagnosis::Kind::kNetwork, std::string(last.message())};
    if (absl::IsPermissionDenied(last) || absl::IsUnauthenticated(last)) {
      why.kind = ConnectionDiagnosis::Kind::kCertificate;
    } else if (absl::IsFailedPrecondition(last)) {
      why.kind = ConnectionDiagnosis::Kind::kProtocol;  // the versions do not meet
    } else if (!opened && !last.ok() && options_.diagnose) {
      why = options_.diagnose();
      if (why.kind == ConnectionDiagnosis::Kind::kReachable)
        why.reason = std::string(last.message());
    }
    if (!why.Transient()) {
      same = why.reason == same_reason ? same + 1 : 1;
      same_reason = why.reason;
      if (same >= options_.max_certificate_failures) {
        return absl::InvalidArgumentError(absl::StrCat("cannot connect to ", options_.target, ": ",
                                                       why.reason, " (", same,
                                                       " attempts; retrying will not help)"));
      }
    } else {
      same = 0;
      same_reason.clear();
    }
    // Equal jitter (half the backoff plus a random half): a restarted
    // orchestrator is not hit by every silo at once.
    const std::chrono::milliseconds wait = backoff.NextWait();
    if (!why.Transient()) {
      spdlog::error("cannot connect to {}: {}; retrying in {} ms", options_.target, why.reason,
                    wait.count());
    } else {
      spdlog::warn("connection to {} {}: {}; retrying in {} ms", options_.target,
                   opened ? "lost" : "failed", why.reason, wait.count());
    }
    if (!SleepUnlessStopped(wait)) return absl::OkStatus();
  }
}

Status SiloClient::RunSession() {
  grpc::ClientContext context;
  if (!options_.insecure_name.empty()) {
    AddInsecureIdentity(context, options_.insecure_name, secure::ParticipantKind::kSilo);
  }
  {
    MutexLock lock(&mu_);
    if (stopping_) return absl::OkStatus();
    active_ = &context;
  }
  std::unique_ptr<fedsilo::v1::Orchestrator::Stub> stub = NewStub();
  auto stream = stub->Connect(&context);
  const fedsilo::v1::SiloMessage hello = MakeHello(options_.datasets, options_.job_schemas);
  Status result;
  if (stream->Write(hello)) {
    ++sessions_;
    connected_ = true;
    // Heartbeats go out from a second thread while this one reads; writes
    // from both are serialised.
    Mutex write_mu;
    auto write = [&](const fedsilo::v1::SiloMessage& m) {
      MutexLock lock(&write_mu);
      return stream->Write(m);
    };
    Mutex hb_mu;
    CondVar hb_cv;
    bool hb_stop = false;
    std::thread heartbeats([&] {
      MutexLock lock(&hb_mu);
      for (;;) {
        const auto until = std::chrono::steady_clock::now() + options_.heartbeat_interval;
        while (!hb_stop && hb_cv.WaitUntil(&hb_mu, until)) {
        }
        if (hb_stop) break;
        fedsilo::v1::SiloMessage beat;
        beat.mutable_heartbeat()->set_unix_millis(UnixMillis());
        if (!write(beat)) break;
      }
    });
    // The audit log's head, signed, when one is due (or asked for).
    auto send_head = [&](bool requested) {
      if (!options_.audit_head) return true;
      std::optional<fedsilo::v1::AuditHead> head = options_.audit_head(requested);
      if (!head.has_value()) return true;
      fedsilo::v1::SiloMessage m;
      *m.mutable_audit_head() = *std::move(head);
      return write(m);
    };
    fedsilo::v1::OrchestratorMessage message;
    fedsilo::v1::TaskHeader task;
    ChunkAssembler model;
    bool open = send_head(true);
    while (open && stream->Read(&message)) {
      if (message.has_task()) {
        task = message.task();
        pending_nonce_.clear();
        std::string().swap(pending_update_);  // frees it (clear() keeps the buffer)
        model.Begin(task.model_bytes(), "model of task");
      } else if (message.has_upload()) {
        if (message.upload().nonce() != pending_nonce_ || pending_nonce_.empty()) {
          spdlog::warn("upload requested for a result this silo does not hold; ignored");
          continue;
        }
        const bool sent = ForEachChunk(pending_update_, [&](const fedsilo::v1::Chunk& c) {
          fedsilo::v1::SiloMessage m;
          *m.mutable_chunk() = c;
          return write(m);
        });
        pending_nonce_.clear();
        // Freed, not cleared: an update's buffer is a model's size, and the
        // silo holds nothing of it between rounds.
        std::string().swap(pending_update_);
        if (!sent) break;
      } else if (message.has_secure()) {
        if (!AnswerSecureStep(message.secure(), write) || !send_head(false)) break;
      } else if (message.has_vertical()) {
        if (!AnswerVerticalStep(message.vertical(), write) || !send_head(false)) break;
      } else if (message.has_audit_head_request()) {
        if (!send_head(true)) break;
      } else if (message.has_abort()) {
        spdlog::info("job '{}' ended by the orchestrator: {}", message.abort().job_id(),
                     message.abort().reason());
        pending_nonce_.clear();  // its update will not be asked for
        std::string().swap(pending_update_);
      } else if (message.has_chunk()) {
        Status added = model.Add(message.chunk());
        if (!added.ok()) {
          if (!write(TaskFailedMessage(task, added))) break;
        } else if (model.complete() &&
                   (!AnswerTask(task, model.Take(), write) || !send_head(false))) {
          break;
        }
      }
      // Heartbeat echoes only prove that the orchestrator is alive.
    }
    {
      MutexLock lock(&hb_mu);
      hb_stop = true;
    }
    hb_cv.SignalAll();
    heartbeats.join();
    connected_ = false;
  }
  stream->WritesDone();
  result = FromGrpcStatus(stream->Finish());
  if (result.ok()) result = absl::UnavailableError("the orchestrator closed the stream");
  {
    MutexLock lock(&mu_);
    active_ = nullptr;
  }
  return result;
}

namespace {

// Writes a step's reply: a SecureReply and its payload in chunks, or a
// TaskFailed with the reason.
bool WriteStepReply(const std::string& job_id, int round, const std::string& nonce,
                    const StatusOr<std::string>& reply,
                    const std::function<bool(const fedsilo::v1::SiloMessage&)>& write) {
  if (!reply.ok()) {
    spdlog::warn("job '{}'{}: {}", job_id, round > 0 ? absl::StrCat(" round ", round) : "",
                 std::string(reply.status().message()));
    fedsilo::v1::SiloMessage m;
    m.mutable_failed()->set_job_id(job_id);
    m.mutable_failed()->set_round(round);
    m.mutable_failed()->set_nonce(nonce);
    m.mutable_failed()->set_reason(std::string(reply.status().message()));
    return write(m);
  }
  fedsilo::v1::SiloMessage header;
  fedsilo::v1::SecureReply* r = header.mutable_secure();
  r->set_job_id(job_id);
  r->set_round(round);
  r->set_nonce(nonce);
  r->set_payload_bytes(reply->size());
  if (!write(header)) return false;
  if (reply->empty()) return true;
  return ForEachChunk(*reply, [&](const fedsilo::v1::Chunk& c) {
    fedsilo::v1::SiloMessage m;
    *m.mutable_chunk() = c;
    return write(m);
  });
}

}  // namespace

bool SiloClient::AnswerSecureStep(
    const fedsilo::v1::SecureStep& step,
    const std::function<bool(const fedsilo::v1::SiloMessage&)>& write) {
  StatusOr<std::string> reply =
      handler_ == nullptr
          ? StatusOr<std::string>(absl::UnimplementedError("this silo trains no models"))
          : handler_->SecureStep({step.job_id(), step.round(), step.payload()});
  return WriteStepReply(step.job_id(), step.round(), step.nonce(), reply, write);
}

bool SiloClient::AnswerVerticalStep(
    const fedsilo::v1::VerticalStep& step,
    const std::function<bool(const fedsilo::v1::SiloMessage&)>& write) {
  const auto answer = [&]() -> StatusOr<std::string> {
    if (handler_ == nullptr) return absl::UnimplementedError("this silo trains no models");
    VerticalStepRequest request;
    request.run_id = step.job_id();
    request.payload = step.payload();
    std::optional<JobConfig> job;
    if (!step.job_yaml().empty()) {
      FEDSILO_ASSIGN_OR_RETURN(int schema, ReadableSchema(step.job_schema()));
      FEDSILO_ASSIGN_OR_RETURN(
          job,
          ParseJobConfigOfSchema(step.job_yaml(), absl::StrCat("job ", step.job_id()), schema));
      request.job = &*job;
    }
    return handler_->VerticalStep(request);
  };
  return WriteStepReply(step.job_id(), 0, step.nonce(), answer(), write);
}

StatusOr<int> SiloClient::ReadableSchema(uint32_t job_schema) const {
  // Written by fedsilo 0.1 when unset; in a schema this silo said it reads
  // otherwise, and read as such a reader would.
  const int schema =
      job_schema == 0 ? 1 : static_cast<int>(std::min<uint32_t>(job_schema, 1u << 20));
  const std::vector<int> reads =
      options_.job_schemas.empty() ? OwnVersions().job_schemas : options_.job_schemas;
  if (std::count(reads.begin(), reads.end(), schema) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the job is written in job schema ", schema,
        job_schema == 0 ? " (an orchestrator of fedsilo 0.1)" : "", ", and this silo (",
        FedsiloRelease(), ") reads job schema ", absl::StrJoin(reads, ", "), ": upgrade ",
        schema < reads.front() ? "the orchestrator" : "the silo"));
  }
  return schema;
}

bool SiloClient::AnswerTask(const fedsilo::v1::TaskHeader& task, std::string model_bytes,
                            const std::function<bool(const fedsilo::v1::SiloMessage&)>& write) {
  auto fail = [&](const Status& why) {
    spdlog::warn("job '{}' round {}: {}", task.job_id(), task.round(), std::string(why.message()));
    return write(TaskFailedMessage(task, why));
  };
  if (handler_ == nullptr) return fail(absl::UnimplementedError("this silo trains no models"));
  StatusOr<int> schema = ReadableSchema(task.job_schema());
  if (!schema.ok()) return fail(schema.status());
  StatusOr<JobConfig> job =
      ParseJobConfigOfSchema(task.job_yaml(), absl::StrCat("job ", task.job_id()), *schema);
  if (!job.ok()) return fail(job.status());
  StatusOr<ModelFile> global = ParseModelState(model_bytes, "model of task");
  std::string().swap(model_bytes);  // freed before training, not just emptied
  if (!global.ok()) return fail(global.status());
  TaskRequest request;
  request.run_id = task.job_id();
  request.round = task.round();
  request.seed = task.seed();
  request.job = &*job;
  if (!task.torchscript().empty()) request.torchscript = &task.torchscript();
  switch (task.kind()) {
    case fedsilo::v1::TASK_KIND_FIT:
      request.task = FitTask{&global->state};
      break;
    case fedsilo::v1::TASK_KIND_STATISTICS:
      // Statistics start from no model: orchestrators of every release send
      // the empty one. One that sends more is refused, not audited as empty.
      if (global->state.size() != 0) {
        return fail(absl::InvalidArgumentError(
            "a statistics task carries no model, but this one carried one"));
      }
      request.task = StatisticsTask{};
      break;
    case fedsilo::v1::TASK_KIND_EVALUATE:
      request.task = EvaluateTask{&global->state};
      break;
    default:
      return fail(
          absl::InvalidArgumentError(absl::StrCat("task kind ", static_cast<int>(task.kind()),
                                                  " is unknown to this silo (an older fedsilo?)")));
  }
  StatusOr<FitReply> reply = handler_->RunTask(request);
  if (!reply.ok()) return fail(reply.status());
  std::string update = SerializeModelState(reply->update);
  fedsilo::v1::SiloMessage header;
  fedsilo::v1::ResultHeader* r = header.mutable_result();
  r->set_job_id(task.job_id());
  r->set_round(task.round());
  r->set_nonce(task.nonce());
  r->set_num_examples(reply->num_examples);
  r->mutable_metrics()->insert(reply->metrics.begin(), reply->metrics.end());
  r->set_metrics_private(reply->metrics_private);
  r->set_update_bytes(update.size());
  pending_nonce_ = task.nonce();
  pending_update_ = std::move(update);
  return write(header);
}

}  // namespace fedsilo::transport
