// The orchestrator's silo-facing service (OrchestratorService: Connect and
// WhoAmI) as a hostile silo drives it: messages of every kind, in any order,
// with any sizes and nonces, on one or several streams, while the
// orchestrator sends tasks, pulls updates, runs secure-aggregation and
// vertical steps and cancels runs. The input is a script (script.h, StreamOp).
//
// The service runs behind a real gRPC server, reached in process; identities
// are claimed in call metadata (insecure mode), since the TLS handshake is
// not what this target exercises (tests/hostile and the crl target are).
//
// Properties besides "no crash": every orchestrator call returns once the
// silo's streams are closed; a task succeeds only with a result that answers
// it; an update or a secure-aggregation reply is never larger than its
// announced size, and an announced size over the task's bound never gets a
// result through; once every stream is closed the silo is not connected and
// every session that was opened was closed.
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/job_config.h"
#include "core/model_state_file.h"
#include "fedsilo/v1/federation.grpc.pb.h"
#include "fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "script.h"
#include "secure/certificate_authority.h"
#include "transport/chunks.h"
#include "transport/orchestrator_service.h"
#include "transport/tls.h"

namespace {

using namespace fedsilo;
using fedsilo::v1::OrchestratorMessage;
using fedsilo::v1::SiloMessage;
using fuzz::Script;
using fuzz::StreamOp;

constexpr char kSilo[] = "mallory";
// Longer than any input takes: a call that is still waiting when it passes
// has missed the close of its stream (a hang libFuzzer reports).
constexpr std::chrono::milliseconds kCallTimeout{30000};
constexpr int kMaxStreams = 4;
constexpr int kMaxCalls = 16;
constexpr int kMaxOps = 256;
constexpr int64_t kAnswerMark = int64_t{1} << 40;  // the counts answers carry

class CountingListener : public transport::SiloSessionListener {
 public:
  void OnConnected(const std::string&, uint64_t, const std::vector<std::string>&) override {
    ++connects;
  }
  void OnHeartbeat(const std::string&, uint64_t) override {}
  void OnDisconnected(const std::string&, uint64_t, const Status&) override { ++disconnects; }
  std::atomic<int> connects{0};
  std::atomic<int> disconnects{0};
};

// The service behind a gRPC server with production limits, once per process.
struct Server {
  Server() {
    spdlog::set_level(spdlog::level::off);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
    google::protobuf::SetLogHandler(nullptr);
    grpc::ServerBuilder builder;
    transport::ApplyServerLimits(builder);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    channel = server->InProcessChannel(grpc::ChannelArguments());
  }
  CountingListener listener;
  transport::OrchestratorService service{
      "", &listener, [] { return std::chrono::system_clock::now(); }, /*insecure=*/true};
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};

Server& TheServer() {
  static Server* server = new Server();  // lives until exit: gRPC's threads use it
  return *server;
}

// What the silo's end has received (from every stream), for echoing the task
// that is out, and for the driver to wait on.
struct Received {
  std::mutex mu;
  std::condition_variable cv;
  int tasks = 0, uploads = 0, steps = 0;
  int running = 0;  // orchestrator calls not yet returned
  std::string job, nonce;
  int round = 0;
  int64_t echoed = 0;  // the last heartbeat the service echoed
  // The last task's kind and model size: what its update may announce.
  fedsilo::v1::TaskKind kind = fedsilo::v1::TASK_KIND_FIT;
  uint64_t model_bytes = 0;
};

std::string Printable(std::string s) {
  for (char& c : s) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return s;
}

// One Connect stream of the hostile silo, read by a thread of its own.
struct SiloStream {
  SiloStream(fedsilo::v1::Orchestrator::Stub& stub, Received& received, const std::string& kind) {
    context.AddMetadata("x-fedsilo-insecure-name", kSilo);
    context.AddMetadata("x-fedsilo-insecure-kind", kind);
    rw = stub.Connect(&context);
    reader = std::thread([this, &received] {
      OrchestratorMessage m;
      while (rw->Read(&m)) {
        std::lock_guard<std::mutex> lock(received.mu);
        if (m.has_task()) {
          ++received.tasks;
          received.job = m.task().job_id();
          received.round = m.task().round();
          received.nonce = m.task().nonce();
          received.kind = m.task().kind();
          received.model_bytes = m.task().model_bytes();
        } else if (m.has_upload()) {
          ++received.uploads;
        } else if (m.has_secure()) {
          ++received.steps;
          received.job = m.secure().job_id();
          received.round = m.secure().round();
          received.nonce = m.secure().nonce();
        } else if (m.has_vertical()) {  // answered like a secure step, round 0
          ++received.steps;
          received.job = m.vertical().job_id();
          received.round = 0;
          received.nonce = m.vertical().nonce();
        } else if (m.has_heartbeat()) {
          received.echoed = m.heartbeat().unix_millis();
        }
        received.cv.notify_all();
      }
      std::lock_guard<std::mutex> lock(received.mu);
      ended = true;
      received.cv.notify_all();
    });
  }
  void Close() {
    if (closed) return;
    closed = true;
    rw->WritesDone();
    reader.join();  // the service ends the call once it has read the close
    (void)rw->Finish();
  }
  ~SiloStream() { Close(); }

  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<SiloMessage, OrchestratorMessage>> rw;
  std::thread reader;
  bool closed = false;
  bool ended = false;  // the service ended the call (under Received::mu)
  int sent = 0;        // messages the script sent on it
};

// One input: the silo's streams, the orchestrator's calls in flight, and what
// the silo has said that a call may rightly return.
class Conversation {
 public:
  Conversation(Server& server, Script& script)
      : server_(server),
        script_(script),
        stub_(fedsilo::v1::Orchestrator::NewStub(server.channel)) {
    // A run of its own: the service keeps state between inputs (the model
    // it last sent, by run and round), which must not carry over.
    static int inputs = 0;
    run_ = "run-" + std::to_string(++inputs);
    // The model of every task, and the update the silo uploads: sizes from
    // the input.
    const int64_t n = 1 + script_.Byte() % 64;
    std::vector<float> values(static_cast<size_t>(n), 0.25f);
    (void)global_.Add(Tensor::FromFloats("w", {n}, values));
    ModelState update;
    const int64_t m = 1 + script_.Byte() % 64;
    (void)update.Add(Tensor::FromFloats("w", {m}, std::vector<float>(static_cast<size_t>(m), 1.f)));
    upload_ = SerializeModelState(update);
  }

  ~Conversation() {
    for (auto& s : streams_) s->Close();
    for (std::thread& t : calls_) t.join();
    sources_.clear();  // results never fetched free their silo
  }

  void Run() {
    // Bounded, so that no input is merely slow (a step may wait a few
    // milliseconds for the service).
    for (int ops = 0; ops < kMaxOps && !script_.done(); ++ops) {
      Step(static_cast<StreamOp>(script_.Byte() % uint8_t(StreamOp::kCount)));
    }
  }

 private:
  SiloStream* Current() {
    if (streams_.empty() || streams_.back()->closed) return nullptr;
    return streams_.back().get();
  }
  void Send(const SiloMessage& m) {
    if (SiloStream* s = Current()) {
      ++s->sent;
      s->rw->Write(m);
    }
  }
  // Sends a message that may end an orchestrator call, and lets it return.
  void SendAndSettle(const SiloMessage& m) {
    Send(m);
    Settle();
  }
  // Copies the task's fields that `flags` names into a reply; the task's
  // nonce when it answers the task (all three copied), else empty.
  template <typename Reply>
  std::string Echo(Reply* r) {
    const uint8_t flags = script_.Byte();
    std::lock_guard<std::mutex> lock(received_.mu);
    r->set_job_id(flags & fuzz::kEchoJob ? received_.job : "other-job");
    r->set_round(flags & fuzz::kEchoRound ? received_.round : received_.round + 1);
    r->set_nonce(flags & fuzz::kEchoNonce ? received_.nonce : "stale-nonce");
    return (flags & fuzz::kEchoAll) == fuzz::kEchoAll ? received_.nonce : std::string();
  }
  // Waits until the service has handled everything sent so far on the
  // current stream (a heartbeat sent after it has come back, or the stream
  // ended), then gives the orchestrator's calls a moment to return: so that
  // the script, not the scheduler, decides the order of most events. A call
  // still waiting after that goes on waiting.
  void Settle() {
    SiloStream* s = Current();
    std::unique_lock<std::mutex> lock(received_.mu);
    // (Never as a stream's first message, which must be the script's.)
    if (s != nullptr && s->sent > 0) {
      const int64_t marker = --barrier_;  // negative: no script's heartbeat
      SiloMessage beat;
      beat.mutable_heartbeat()->set_unix_millis(marker);
      lock.unlock();
      s->rw->Write(beat);
      lock.lock();
      received_.cv.wait_for(lock, std::chrono::seconds(5),
                            [&] { return received_.echoed == marker || s->ended; });
    }
    received_.cv.wait_for(lock, std::chrono::milliseconds(5),
                          [&] { return received_.running == 0; });
  }
  // Starts an orchestrator call on a thread of its own and waits until the
  // silo has received what it sends (`counter` moved) or the call is over.
  // Like a round, the orchestrator makes one call at a time per silo when
  // it can: earlier calls are given a moment to return first.
  void Call(int Received::*counter, std::function<void()> call) {
    if (calls_.size() >= kMaxCalls) return;
    Settle();
    auto done = std::make_shared<bool>(false);
    int before;
    {
      std::lock_guard<std::mutex> lock(received_.mu);
      before = received_.*counter;
      ++received_.running;
    }
    calls_.emplace_back([this, done, call = std::move(call)] {
      call();
      std::lock_guard<std::mutex> lock(received_.mu);
      *done = true;
      --received_.running;
      received_.cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(received_.mu);
    received_.cv.wait_for(lock, std::chrono::seconds(5),
                          [&] { return *done || received_.*counter != before; });
  }

  // One op of the script: a message the silo sends, or an event on the
  // orchestrator's side.
  void Step(StreamOp op) {
    SiloMessage m;
    switch (op) {
      case StreamOp::kHello:
        SendHello();
        break;
      case StreamOp::kHeartbeat:
        m.mutable_heartbeat()->set_unix_millis(static_cast<int64_t>(script_.Number()));
        Send(m);
        break;
      case StreamOp::kResult:
        SendResult();
        break;
      case StreamOp::kSecureReply:
        SendSecureReply();
        break;
      case StreamOp::kChunk:
        m.mutable_chunk()->set_data(script_.Bytes(4096));
        m.mutable_chunk()->set_last(script_.Flag());
        SendAndSettle(m);
        break;
      case StreamOp::kUpload:
        SendUpload();
        break;
      case StreamOp::kFailed:
        (void)Echo(m.mutable_failed());
        m.mutable_failed()->set_reason(script_.Bytes(64));
        SendAndSettle(m);
        break;
      case StreamOp::kRaw:
        if (m.ParseFromString(script_.Bytes(4096))) SendAndSettle(m);
        break;
      case StreamOp::kFit:
        StartTask();
        break;
      case StreamOp::kFetch:
        StartFetch();
        break;
      case StreamOp::kSecureStep:
        StartSecureStep();
        break;
      case StreamOp::kVerticalStep:
        StartVerticalStep();
        break;
      case StreamOp::kCancel:
        CancelRun();
        break;
      case StreamOp::kReconnect:
        OpenStream();
        break;
      case StreamOp::kClose:
        if (SiloStream* s = Current()) s->Close();
        break;
      case StreamOp::kWhoAmI:
        CheckWhoAmI();
        break;
      case StreamOp::kCount:
        break;
    }
  }

  void SendHello() {
    SiloMessage m;
    for (int i = script_.Byte() % 4; i > 0; --i) {
      m.mutable_hello()->add_datasets(script_.Bytes(32));
    }
    m.mutable_hello()->set_version(script_.Bytes(16));
    SendAndSettle(m);  // the session opens once the service has read it
  }

  // A task's result header; a first answer within the task's bound is
  // recorded as one the task may return.
  void SendResult() {
    SiloMessage m;
    fedsilo::v1::ResultHeader* r = m.mutable_result();
    const std::string nonce = Echo(r);
    r->set_update_bytes(script_.Number(upload_.size()));
    r->set_num_examples(static_cast<int64_t>(script_.Number()));
    // An answer carries a count of its own, so that a task's reply can
    // be traced to the one answer it came from.
    if (!nonce.empty()) r->set_num_examples(kAnswerMark + next_answer_++);
    for (int i = script_.Byte() % 3; i > 0; --i) {
      const std::string name = script_.Bytes(16);
      (*r->mutable_metrics())[name] = static_cast<double>(script_.Number());
    }
    r->set_metrics_private(script_.Flag());
    // An update may announce at most twice the model it answers (other
    // tasks' replies 64 MiB): past that, the task must fail.
    uint64_t bound;
    {
      std::lock_guard<std::mutex> lock(received_.mu);
      bound = received_.kind == fedsilo::v1::TASK_KIND_FIT ? 2 * received_.model_bytes + (1 << 20)
                                                           : transport::kMaxSmallReplyBytes;
    }
    // The service takes the first answer of a task (or closes the
    // stream over it) and ignores the rest.
    if (!nonce.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (first_results_.emplace(nonce, r->update_bytes()).second && r->update_bytes() <= bound) {
        answered_examples_.insert(r->num_examples());
        announced_updates_.insert(r->update_bytes());
      }
    }
    SendAndSettle(m);
  }

  void SendSecureReply() {
    SiloMessage m;
    fedsilo::v1::SecureReply* r = m.mutable_secure();
    const std::string nonce = Echo(r);
    r->set_payload_bytes(script_.Number(16));
    // At most what the model's values take, plus keys and shares.
    const uint64_t bound = 2 * SerializeModelState(global_).size() + transport::kMaxSmallReplyBytes;
    if (!nonce.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (first_secure_.emplace(nonce, r->payload_bytes()).second && r->payload_bytes() <= bound) {
        announced_secure_.insert(r->payload_bytes());
      }
    }
    SendAndSettle(m);
  }

  // The update, in chunks of one size, perhaps with one byte flipped.
  void SendUpload() {
    SiloMessage m;
    const size_t piece = 1 + script_.Byte() % 128;
    std::string bytes = upload_;
    if (script_.Flag()) bytes[script_.Byte() % bytes.size()] ^= 0x5a;
    for (size_t at = 0; at < bytes.size(); at += piece) {
      m.mutable_chunk()->set_data(bytes.substr(at, piece));
      m.mutable_chunk()->set_last(at + piece >= bytes.size());
      Send(m);
    }
    Settle();
  }

  // The orchestrator sends a task and waits for its reply.
  void StartTask() {
    const uint8_t kind = script_.Byte() % 3;
    const int round = 1 + script_.Byte() % 4;
    Call(&Received::tasks, [this, kind, round] {
      transport::TaskRequest request;
      request.run_id = run_;
      request.round = round;
      request.job = &job_;
      if (kind == 0) request.task = transport::FitTask{&global_};
      if (kind == 1) request.task = transport::StatisticsTask{};
      if (kind == 2) request.task = transport::EvaluateTask{&global_};
      StatusOr<transport::FitReply> reply = server_.service.RunTask(kSilo, request, kCallTimeout);
      FEDSILO_FUZZ_CHECK(reply.ok() || !absl::IsDeadlineExceeded(reply.status()));
      if (!reply.ok()) return;
      std::lock_guard<std::mutex> lock(mu_);
      FEDSILO_FUZZ_CHECK(answered_examples_.count(reply->num_examples) == 1);
      FEDSILO_FUZZ_CHECK(reply->source != nullptr);
      sources_.push_back(reply->source);
    });
  }

  // The orchestrator pulls the update of the last task that succeeded, if
  // any is left.
  void StartFetch() {
    std::shared_ptr<transport::UpdateSource> source;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (sources_.empty()) return;
      source = sources_.back();
      sources_.pop_back();
    }
    Call(&Received::uploads, [this, source] {
      StatusOr<ModelState> update = source->Fetch();
      FEDSILO_FUZZ_CHECK(update.ok() || !absl::IsDeadlineExceeded(update.status()));
      if (!update.ok()) return;
      // What arrived was announced by a task's first answer (metadata,
      // which the state drops, only makes the announced size larger).
      const uint64_t bytes = SerializeModelState(*update).size();
      std::lock_guard<std::mutex> lock(mu_);
      FEDSILO_FUZZ_CHECK(announced_updates_.lower_bound(bytes) != announced_updates_.end());
    });
  }

  void StartSecureStep() {
    std::string payload = script_.Bytes(64);
    const int round = 1 + script_.Byte() % 4;
    Call(&Received::steps, [this, payload, round] {
      transport::SecureStepRequest request{run_, round, payload};
      StatusOr<std::string> reply = server_.service.SecureStep(kSilo, request, kCallTimeout);
      FEDSILO_FUZZ_CHECK(reply.ok() || !absl::IsDeadlineExceeded(reply.status()));
      if (!reply.ok()) return;
      std::lock_guard<std::mutex> lock(mu_);
      FEDSILO_FUZZ_CHECK(announced_secure_.count(reply->size()) == 1);  // exactly announced
    });
  }

  // A vertical job's step, its reply bounded as a secure step's is.
  void StartVerticalStep() {
    std::string payload = script_.Bytes(64);
    const uint64_t bound = 2 * SerializeModelState(global_).size() + transport::kMaxSmallReplyBytes;
    Call(&Received::steps, [this, payload, bound] {
      transport::VerticalStepRequest request{run_, nullptr, payload, bound};
      StatusOr<std::string> reply = server_.service.VerticalStep(kSilo, request, kCallTimeout);
      FEDSILO_FUZZ_CHECK(reply.ok() || !absl::IsDeadlineExceeded(reply.status()));
      if (!reply.ok()) return;
      std::lock_guard<std::mutex> lock(mu_);
      FEDSILO_FUZZ_CHECK(announced_secure_.count(reply->size()) == 1);  // exactly announced
    });
  }

  void CancelRun() {
    // The orchestrator's own words (valid UTF-8, as protobuf requires of
    // the Abort's strings): only the silo's messages are hostile here.
    const std::string run = script_.Flag() ? run_ : Printable(script_.Bytes(16));
    const std::string reason = Printable(script_.Bytes(32));
    server_.service.CancelRun(run, reason);
  }

  // A new stream, claiming a kind of caller; the silo then speaks on it.
  void OpenStream() {
    const char* kinds[] = {"silo", "silo", "user", "orchestrator", "nobody"};
    const std::string kind = kinds[script_.Byte() % 5];
    if (streams_.size() < kMaxStreams) {
      streams_.push_back(std::make_unique<SiloStream>(*stub_, received_, kind));
    }
  }

  void CheckWhoAmI() {
    const std::string name = Printable(script_.Bytes(24));  // as gRPC metadata must be
    const char* kinds[] = {"silo", "user", "orchestrator", "admin", ""};
    const std::string kind = kinds[script_.Byte() % 5];
    grpc::ClientContext context;
    context.AddMetadata("x-fedsilo-insecure-name", name);
    context.AddMetadata("x-fedsilo-insecure-kind", kind);
    fedsilo::v1::WhoAmIReply reply;
    const grpc::Status s = stub_->WhoAmI(&context, fedsilo::v1::WhoAmIRequest(), &reply);
    if (s.ok()) {
      // A claimed name comes back escaped, as it would be logged.
      FEDSILO_FUZZ_CHECK(reply.name() == secure::ShownName(name) && reply.kind() == kind);
      FEDSILO_FUZZ_CHECK(kind == "silo" || kind == "user" || kind == "orchestrator");
    }
  }

  Server& server_;
  Script& script_;
  std::unique_ptr<fedsilo::v1::Orchestrator::Stub> stub_;
  std::string run_;
  JobConfig job_;
  ModelState global_;
  std::string upload_;
  Received received_;
  std::vector<std::unique_ptr<SiloStream>> streams_;
  std::vector<std::thread> calls_;
  int64_t barrier_ = 0;

  std::mutex mu_;
  std::map<std::string, uint64_t> first_results_;  // task nonce -> its first answer's size
  std::map<std::string, uint64_t> first_secure_;
  int64_t next_answer_ = 0;
  std::set<int64_t> answered_examples_;  // of first answers within the task's bound
  std::set<uint64_t> announced_updates_;
  std::set<uint64_t> announced_secure_;
  std::vector<std::shared_ptr<transport::UpdateSource>> sources_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16 * 1024) return 0;
  Server& server = TheServer();
  Script script(data, size);
  {
    Conversation conversation(server, script);
    conversation.Run();
  }
  // Every stream is closed and every call has returned.
  FEDSILO_FUZZ_CHECK(!server.service.IsConnected(kSilo));
  FEDSILO_FUZZ_CHECK(server.listener.connects.load() == server.listener.disconnects.load());
  return 0;
}
