// OrchestratorService's handling of what a silo sends, over a real gRPC
// server with mutual TLS on 127.0.0.1. The silo is played by hand, as an
// attacker holding a valid silo certificate would: messages out of order,
// answers to tasks never sent, sizes that lie.
#include "transport/orchestrator_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/job_config.h"
#include "core/job_schema.h"
#include "core/model_state.h"
#include "core/model_state_file.h"
#include "core/mutex.h"
#include "core/version.h"
#include "secure/provisioner.h"
#include "transport/chunks.h"
#include "transport/tls.h"
#include "transport/versions.h"

namespace fedsilo::transport {
namespace {

using secure::ParticipantKind;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// How long anything that should happen may take on a loaded machine. Only a
// failing test waits this long.
constexpr std::chrono::seconds kCeiling{60};

// Records the sessions the service reports, and lets a test wait for them.
class RecordingListener : public SiloSessionListener {
 public:
  struct Event {
    std::string silo;
    uint64_t session = 0;
    std::vector<std::string> datasets;  // OnConnected
    Status why;                         // OnDisconnected
  };

  void OnConnected(const std::string& silo, uint64_t session,
                   const std::vector<std::string>& datasets) override {
    MutexLock lock(&mu_);
    connected_.push_back({silo, session, datasets, absl::OkStatus()});
    cv_.SignalAll();
  }
  void OnHeartbeat(const std::string&, uint64_t) override {}
  void OnDisconnected(const std::string& silo, uint64_t session, const Status& why) override {
    MutexLock lock(&mu_);
    disconnected_.push_back({silo, session, {}, why});
    cv_.SignalAll();
  }

  // Waits until `n` sessions have opened (or closed); false after kCeiling.
  bool WaitConnected(size_t n) { return WaitFor(/*closed=*/false, n); }
  bool WaitDisconnected(size_t n) { return WaitFor(/*closed=*/true, n); }
  std::vector<Event> connected() {
    MutexLock lock(&mu_);
    return connected_;
  }
  std::vector<Event> disconnected() {
    MutexLock lock(&mu_);
    return disconnected_;
  }

 private:
  bool WaitFor(bool closed, size_t n) {
    MutexLock lock(&mu_);
    const auto until = std::chrono::steady_clock::now() + kCeiling;
    while ((closed ? disconnected_ : connected_).size() < n && cv_.WaitUntil(&mu_, until)) {
    }
    return (closed ? disconnected_ : connected_).size() >= n;
  }

  Mutex mu_;
  CondVar cv_;
  std::vector<Event> connected_ ABSL_GUARDED_BY(mu_);
  std::vector<Event> disconnected_ ABSL_GUARDED_BY(mu_);
};

TlsFiles Files(const std::string& kit_dir) {
  auto kit = secure::LoadKit(kit_dir);
  EXPECT_TRUE(kit.ok()) << kit.status();
  auto files = LoadTlsFiles(*kit);
  EXPECT_TRUE(files.ok()) << files.status();
  return std::move(files).value();
}

// A Connect stream driven by hand with a silo's certificate.
class HandSilo {
 public:
  HandSilo(const std::string& target, const TlsFiles& files)
      : stub_(fedsilo::v1::Orchestrator::NewStub(
            grpc::CreateChannel(target, MakeChannelCredentials(files)))) {
    // Only a test that fails waits for it: the orchestrator ends the stream
    // whenever a test expects it to.
    context_.set_deadline(std::chrono::system_clock::now() + 3 * kCeiling);
    stream_ = stub_->Connect(&context_);
  }
  ~HandSilo() {
    if (finished_) return;
    context_.TryCancel();
    Finish().IgnoreError();
  }

  bool Send(const fedsilo::v1::SiloMessage& m) { return stream_->Write(m); }
  bool Hello() {
    fedsilo::v1::SiloMessage hello;
    hello.mutable_hello()->add_datasets("digits");
    hello.mutable_hello()->set_version("hand 0");
    return Send(hello);
  }

  // The next message from the orchestrator other than a heartbeat echo;
  // false when the stream ended.
  bool Read(fedsilo::v1::OrchestratorMessage* m) {
    if (!pending_.empty()) {
      *m = std::move(pending_.front());
      pending_.pop_front();
      return true;
    }
    while (stream_->Read(m)) {
      if (!m->has_heartbeat()) return true;
    }
    return false;
  }
  // A task's header, once its model chunks have all arrived.
  bool ReadTask(fedsilo::v1::TaskHeader* task) {
    fedsilo::v1::OrchestratorMessage m;
    bool have_header = false;
    while (Read(&m)) {
      if (m.has_task()) {
        *task = m.task();
        have_header = true;
      } else if (have_header && m.has_chunk() && m.chunk().last()) {
        return true;
      }
    }
    return false;
  }
  bool ReadUpload(fedsilo::v1::UploadRequest* upload) {
    fedsilo::v1::OrchestratorMessage m;
    while (Read(&m)) {
      if (m.has_upload()) {
        *upload = m.upload();
        return true;
      }
    }
    return false;
  }
  bool ReadSecureStep(fedsilo::v1::SecureStep* step) {
    fedsilo::v1::OrchestratorMessage m;
    while (Read(&m)) {
      if (m.has_secure()) {
        *step = m.secure();
        return true;
      }
    }
    return false;
  }
  // Sends a heartbeat and reads until its echo: the orchestrator reads a
  // stream on one thread, so every message sent before has been handled.
  // False when the stream ended instead. Other messages are kept for Read().
  bool Sync() {
    fedsilo::v1::SiloMessage beat;
    beat.mutable_heartbeat()->set_unix_millis(++syncs_);
    if (!Send(beat)) return false;
    fedsilo::v1::OrchestratorMessage m;
    while (stream_->Read(&m)) {
      if (m.has_heartbeat() && m.heartbeat().unix_millis() == syncs_) return true;
      if (!m.has_heartbeat()) pending_.push_back(m);
    }
    return false;
  }
  // Reads to the end of the stream and returns how it ended. REQUIRES: the
  // orchestrator ends it (or the stream was cancelled).
  Status Finish() {
    finished_ = true;
    stream_->WritesDone();
    fedsilo::v1::OrchestratorMessage m;
    while (stream_->Read(&m)) {
    }
    const grpc::Status s = stream_->Finish();
    return Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }

 private:
  std::unique_ptr<fedsilo::v1::Orchestrator::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<fedsilo::v1::SiloMessage, fedsilo::v1::OrchestratorMessage>>
      stream_;
  std::deque<fedsilo::v1::OrchestratorMessage> pending_;
  int64_t syncs_ = 0;
  bool finished_ = false;
};

fedsilo::v1::SiloMessage ResultFor(const fedsilo::v1::TaskHeader& task, uint64_t update_bytes,
                                   int64_t num_examples) {
  fedsilo::v1::SiloMessage m;
  m.mutable_result()->set_job_id(task.job_id());
  m.mutable_result()->set_round(task.round());
  m.mutable_result()->set_nonce(task.nonce());
  m.mutable_result()->set_num_examples(num_examples);
  m.mutable_result()->set_update_bytes(update_bytes);
  return m;
}

fedsilo::v1::SiloMessage ChunkMessage(std::string data, bool last) {
  fedsilo::v1::SiloMessage m;
  m.mutable_chunk()->set_data(std::move(data));
  m.mutable_chunk()->set_last(last);
  return m;
}

fedsilo::v1::SiloMessage FailedFor(const std::string& job_id, int round, const std::string& nonce,
                                   const std::string& reason) {
  fedsilo::v1::SiloMessage m;
  m.mutable_failed()->set_job_id(job_id);
  m.mutable_failed()->set_round(round);
  m.mutable_failed()->set_nonce(nonce);
  m.mutable_failed()->set_reason(reason);
  return m;
}

fedsilo::v1::SiloMessage SecureReplyFor(const fedsilo::v1::SecureStep& step, uint64_t bytes) {
  fedsilo::v1::SiloMessage m;
  m.mutable_secure()->set_job_id(step.job_id());
  m.mutable_secure()->set_round(step.round());
  m.mutable_secure()->set_nonce(step.nonce());
  m.mutable_secure()->set_payload_bytes(bytes);
  return m;
}

// A federation of silos hospital-a and hospital-b, and an orchestrator
// endpoint serving it on 127.0.0.1 with an OS-chosen port.
class OrchestratorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Per test and process: ctest runs tests side by side.
    dir_ = ::testing::TempDir() + "/orchestrator_service_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
           std::to_string(getpid());
    fs::remove_all(dir_);
    secure::FederationSpec spec;
    spec.name = "hospitals";
    spec.certificate_days = 30;
    spec.participants = {{"hospital-a", ParticipantKind::kSilo},
                         {"hospital-b", ParticipantKind::kSilo}};
    ASSERT_TRUE(secure::ProvisionFederation(spec, dir_, std::chrono::system_clock::now()).ok());
    files_ = Files(dir_ + "/orchestrator");
    service_ = std::make_unique<OrchestratorService>(
        files_.ca_pem, &listener_, [] { return std::chrono::system_clock::now(); });
    auto server = GrpcServer::Start("127.0.0.1:0", MakeServerCredentials(files_), {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();

    job_.data.dataset = "digits";
    job_.federation.silos = {"hospital-a", "hospital-b"};
    ASSERT_TRUE(global_.Add(Tensor::FromFloats("w", {4}, {1, 2, 3, 4})).ok());
    ASSERT_TRUE(update_.Add(Tensor::FromFloats("w", {4}, {0.5f, 0.5f, 0.5f, 0.5f})).ok());
    update_bytes_ = SerializeModelState(update_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A stream of `silo`'s certificate that said hello and is registered.
  std::unique_ptr<HandSilo> Connect(const std::string& silo) {
    const size_t before = listener_.connected().size();
    auto hand = std::make_unique<HandSilo>(target(), Files(dir_ + "/" + silo));
    EXPECT_TRUE(hand->Hello());
    EXPECT_TRUE(listener_.WaitConnected(before + 1)) << silo << " did not connect";
    return hand;
  }
  std::unique_ptr<HandSilo> Unregistered(const std::string& silo) {
    return std::make_unique<HandSilo>(target(), Files(dir_ + "/" + silo));
  }
  std::string target() const { return "localhost:" + std::to_string(server_->port()); }

  // The service's RunTask(), on its own thread as a round runs it.
  std::future<StatusOr<FitReply>> StartFit(const std::string& silo, const std::string& run,
                                           int round, TaskKind kind = TaskKind::kFit) {
    TaskRequest request{run, round, 7, &job_, nullptr, FitTask{&global_}};
    if (kind == TaskKind::kStatistics) request.task = StatisticsTask{};
    if (kind == TaskKind::kEvaluate) request.task = EvaluateTask{&global_};
    return std::async(std::launch::async, [this, silo, request] {
      return service_->RunTask(silo, request, 2 * kCeiling);
    });
  }
  // A whole task answered honestly: Fit, result, upload. The update must be update_.
  void HonestRound(HandSilo& hand, const std::string& silo, const std::string& run, int round) {
    auto fit = StartFit(silo, run, round);
    fedsilo::v1::TaskHeader task;
    ASSERT_TRUE(hand.ReadTask(&task));
    ASSERT_TRUE(hand.Send(ResultFor(task, update_bytes_.size(), 11)));
    StatusOr<FitReply> reply = fit.get();
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->num_examples, 11);
    ASSERT_NE(reply->source, nullptr);
    auto fetch = std::async(std::launch::async, [&] { return reply->source->Fetch(); });
    fedsilo::v1::UploadRequest upload;
    ASSERT_TRUE(hand.ReadUpload(&upload));
    EXPECT_EQ(upload.nonce(), task.nonce());
    ASSERT_TRUE(ForEachChunk(update_bytes_, [&](const fedsilo::v1::Chunk& c) {
      fedsilo::v1::SiloMessage m;
      *m.mutable_chunk() = c;
      return hand.Send(m);
    }));
    StatusOr<ModelState> fetched = fetch.get();
    ASSERT_TRUE(fetched.ok()) << fetched.status();
    EXPECT_EQ(fetched->tensors()[0].floats(), update_.tensors()[0].floats());
  }

  std::string dir_;
  TlsFiles files_;
  RecordingListener listener_;
  std::unique_ptr<OrchestratorService> service_;
  std::unique_ptr<GrpcServer> server_;
  JobConfig job_;
  ModelState global_;
  ModelState update_;
  std::string update_bytes_;
};

// --- Before and beside the hello ---------------------------------------------

TEST_F(OrchestratorServiceTest,
       AnyMessageBeforeTheHelloEndsTheStreamWithInvalidArgumentAndOpensNoSession) {
  fedsilo::v1::TaskHeader never_sent;
  never_sent.set_job_id("run");
  never_sent.set_round(1);
  never_sent.set_nonce(std::string(16, 'x'));
  fedsilo::v1::SiloMessage heartbeat;
  heartbeat.mutable_heartbeat()->set_unix_millis(1);
  for (const fedsilo::v1::SiloMessage& first :
       {heartbeat, ResultFor(never_sent, 10, 5), ChunkMessage("abc", true),
        fedsilo::v1::SiloMessage()}) {
    SCOPED_TRACE(first.ShortDebugString());
    auto hand = Unregistered("hospital-a");
    ASSERT_TRUE(hand->Send(first));
    const Status ended = hand->Finish();
    EXPECT_EQ(ended.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ended.message(), "the first message on Connect must be SiloHello");
  }
  // No session was ever opened (Connect returns before registering one).
  EXPECT_TRUE(listener_.connected().empty());
  EXPECT_TRUE(service_->ConnectedSilos().empty());
}

// A silo of a release with no protocol in common is refused at its hello,
// naming both releases; one of fedsilo 0.1 (a hello without versions) gets
// its jobs in job schema 1, and a job that needs more is refused for it.
TEST_F(OrchestratorServiceTest, VersionsAreAgreedAtTheHelloOrTheSiloIsRefusedNamingBoth) {
  auto log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  spdlog::default_logger()->sinks().push_back(log);
  // Silenced rather than removed at the end: the service's threads may still
  // be logging (a silo's disconnection), and removing a sink while they walk
  // the list is a race.
  struct Unhook {
    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink;
    ~Unhook() { sink->set_level(spdlog::level::off); }
  } unhook{log};
  const auto logged = [&] {
    std::string all;
    for (const std::string& line : log->last_formatted()) all += line;
    return all;
  };
  auto future = Unregistered("hospital-a");
  fedsilo::v1::SiloMessage hello;
  hello.mutable_hello()->add_datasets("digits");
  hello.mutable_hello()->set_version("fedsilo 9.0.0");
  hello.mutable_hello()->set_protocol_min(kProtocolVersion + 1);
  hello.mutable_hello()->set_protocol_max(kProtocolVersion + 2);
  ASSERT_TRUE(future->Send(hello));
  const Status refused = future->Finish();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr(absl::StrCat("silo 'hospital-a' runs fedsilo 9.0.0, which speaks protocol ",
                                     kProtocolVersion + 1, "–", kProtocolVersion + 2,
                                     "; this orchestrator runs ", FedsiloRelease())));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("upgrade the orchestrator"));
  EXPECT_TRUE(listener_.connected().empty());
  EXPECT_THAT(logged(), HasSubstr("refused silo 'hospital-a' from "));
  EXPECT_THAT(logged(), HasSubstr("runs fedsilo 9.0.0, which speaks protocol"));

  auto old = Connect("hospital-a");  // HandSilo's hello, as fedsilo 0.1 wrote it
  // The log says what was agreed.
  EXPECT_THAT(logged(), HasSubstr("; hand 0, protocol 1, job schema 1)"));
  auto fit = StartFit("hospital-a", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(old->ReadTask(&task));
  EXPECT_EQ(task.job_schema(), 1u);
  EXPECT_THAT(task.job_yaml(), Not(HasSubstr("lr_decay")));
  EXPECT_TRUE(ParseJobConfigOfSchema(task.job_yaml(), "task", 1).ok());
  ASSERT_TRUE(old->Send(FailedFor(task.job_id(), task.round(), task.nonce(), "done")));
  EXPECT_FALSE(fit.get().ok());
  job_.training.lr_decay = 0.5;
  StatusOr<FitReply> needs_more = StartFit("hospital-a", "run", 2).get();
  ASSERT_FALSE(needs_more.ok());
  EXPECT_EQ(needs_more.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(needs_more.status().message()),
              HasSubstr("silo 'hospital-a' runs hand 0, which reads job schema 1; this job sets "
                        "training.lr_decay"));
  // A vertical job's steps need protocol 2: such a silo is named, not sent
  // a step it would not understand.
  VerticalStepRequest vertical;
  vertical.run_id = "run";
  vertical.payload = "x";
  StatusOr<std::string> step =
      service_->VerticalStep("hospital-a", vertical, std::chrono::seconds(5));
  EXPECT_EQ(step.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(step.status().message()),
              HasSubstr("silo 'hospital-a' runs hand 0, which speaks protocol 1; vertical jobs "
                        "need protocol 2 (fedsilo 0.4.0): upgrade silo 'hospital-a'"));
}

TEST_F(OrchestratorServiceTest, ASecondHelloOrAnEmptyMessageClosesTheStreamAsAProtocolBreak) {
  fedsilo::v1::SiloMessage hello;
  hello.mutable_hello()->add_datasets("other");
  struct Case {
    fedsilo::v1::SiloMessage message;
    std::string why;
  };
  size_t sessions = 0;
  for (const Case& c :
       {Case{hello, "unexpected message (field 1) from silo 'hospital-a'"},
        Case{fedsilo::v1::SiloMessage(), "unexpected message (field 0) from silo 'hospital-a'"}}) {
    SCOPED_TRACE(c.why);
    auto hand = Connect("hospital-a");
    ++sessions;
    ASSERT_TRUE(hand->Send(c.message));
    const Status ended = hand->Finish();
    EXPECT_EQ(ended.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ended.message(), c.why);
    // The listener heard it before the stream's status went out.
    ASSERT_EQ(listener_.disconnected().size(), sessions);
    EXPECT_EQ(listener_.disconnected().back().why.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(listener_.disconnected().back().why.message(), c.why);
    EXPECT_FALSE(service_->IsConnected("hospital-a"));
  }
  // The second hello did not change the session's datasets either.
  for (const RecordingListener::Event& e : listener_.connected()) {
    EXPECT_EQ(e.datasets, std::vector<std::string>{"digits"});
  }
}

TEST_F(OrchestratorServiceTest, AProtocolBreakWhileATaskIsOutFailsTheTaskNamingTheSilo) {
  auto hand = Connect("hospital-a");
  auto fit = StartFit("hospital-a", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(hand->ReadTask(&task));
  fedsilo::v1::SiloMessage hello;
  hello.mutable_hello()->add_datasets("digits");
  ASSERT_TRUE(hand->Send(hello));
  StatusOr<FitReply> reply = fit.get();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(reply.status().message(),
            "silo 'hospital-a': silo disconnected: unexpected message (field 1) from silo "
            "'hospital-a'");
  EXPECT_EQ(hand->Finish().code(), absl::StatusCode::kInvalidArgument);
}

// SiloHello carries no name: a session is known by its certificate's name
// alone, so no message can claim to be another silo.
TEST_F(OrchestratorServiceTest,
       SessionsAreNamedByTheirCertificateAndOnlyThatStreamCanAnswerItsTasks) {
  auto a = Connect("hospital-a");
  auto b = Connect("hospital-b");
  const std::vector<RecordingListener::Event> connected = listener_.connected();
  ASSERT_EQ(connected.size(), 2u);
  EXPECT_EQ(connected[0].silo, "hospital-a");
  EXPECT_EQ(connected[1].silo, "hospital-b");
  EXPECT_NE(connected[0].session, connected[1].session);
  EXPECT_EQ(service_->ConnectedSilos(), (std::vector<std::string>{"hospital-a", "hospital-b"}));

  // hospital-b's task reaches the stream of hospital-b's certificate only.
  auto fit = StartFit("hospital-b", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(b->ReadTask(&task));
  // hospital-a answers it with the nonce it has not seen (as if it had): not
  // its task, so it is ignored.
  ASSERT_TRUE(a->Send(ResultFor(task, update_bytes_.size(), 99)));
  ASSERT_TRUE(a->Sync());
  ASSERT_TRUE(b->Send(ResultFor(task, update_bytes_.size(), 5)));
  StatusOr<FitReply> reply = fit.get();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->num_examples, 5);
}

// --- Answers to tasks --------------------------------------------------------

TEST_F(OrchestratorServiceTest, AResultThatAnswersNoTaskSentIsIgnoredAndTheRealAnswerIsTaken) {
  auto hand = Connect("hospital-a");
  auto fit = StartFit("hospital-a", "run", 3);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(hand->ReadTask(&task));
  fedsilo::v1::TaskHeader other_job = task, other_round = task, other_nonce = task, no_nonce = task;
  other_job.set_job_id("another-run");
  other_round.set_round(2);
  other_nonce.set_nonce(std::string(16, 'x'));
  no_nonce.clear_nonce();
  for (const fedsilo::v1::TaskHeader& forged : {other_job, other_round, other_nonce, no_nonce}) {
    ASSERT_TRUE(hand->Send(ResultFor(forged, update_bytes_.size(), 100)));
  }
  ASSERT_TRUE(hand->Send(FailedFor("run", 3, std::string(16, 'x'), "forged failure")));
  ASSERT_TRUE(hand->Send(ResultFor(task, update_bytes_.size(), 5)));  // the answer
  StatusOr<FitReply> reply = fit.get();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->num_examples, 5);

  // A second header for the task, once one was taken, changes nothing: the
  // update is fetched with the size first announced.
  ASSERT_TRUE(hand->Send(ResultFor(task, 3, 200)));
  ASSERT_TRUE(hand->Sync());
  EXPECT_EQ(reply->num_examples, 5);
  auto fetch = std::async(std::launch::async, [&] { return reply->source->Fetch(); });
  fedsilo::v1::UploadRequest upload;
  ASSERT_TRUE(hand->ReadUpload(&upload));
  EXPECT_EQ(upload.job_id(), "run");
  EXPECT_EQ(upload.round(), 3);
  EXPECT_EQ(upload.nonce(), task.nonce());
  ASSERT_TRUE(hand->Send(ChunkMessage(update_bytes_, true)));
  StatusOr<ModelState> fetched = fetch.get();
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(fetched->tensors()[0].floats(), update_.tensors()[0].floats());
  EXPECT_TRUE(hand->Sync());  // none of it closed the stream
}

TEST_F(OrchestratorServiceTest, AnswersAndBytesWhenNoTaskIsOutAreIgnoredAndTheStreamStaysOpen) {
  auto hand = Connect("hospital-a");
  fedsilo::v1::TaskHeader never_sent;
  never_sent.set_job_id("run");
  never_sent.set_round(1);
  never_sent.set_nonce(std::string(16, 'x'));
  fedsilo::v1::SecureStep no_step;
  no_step.set_job_id("run");
  no_step.set_round(1);
  no_step.set_nonce(std::string(16, 'x'));
  ASSERT_TRUE(hand->Send(ResultFor(never_sent, update_bytes_.size(), 100)));
  ASSERT_TRUE(hand->Send(FailedFor("run", 1, std::string(16, 'x'), "forged")));
  ASSERT_TRUE(hand->Send(SecureReplyFor(no_step, 4)));
  ASSERT_TRUE(hand->Send(ChunkMessage("unasked", false)));
  ASSERT_TRUE(hand->Send(ChunkMessage("bytes", true)));
  ASSERT_TRUE(hand->Sync());
  EXPECT_TRUE(service_->IsConnected("hospital-a"));
  EXPECT_TRUE(listener_.disconnected().empty());
  // None of those bytes is taken for the next real update.
  HonestRound(*hand, "hospital-a", "run", 1);
}

TEST_F(OrchestratorServiceTest,
       ATaskFailedCountsOnlyWithTheTasksNonceAndFailsTheTaskNamingTheSilo) {
  auto hand = Connect("hospital-a");
  auto fit = StartFit("hospital-a", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(hand->ReadTask(&task));
  ASSERT_TRUE(hand->Send(FailedFor("run", 1, std::string(16, 'x'), "not this one")));
  ASSERT_TRUE(hand->Send(FailedFor("run", 1, task.nonce(), "out of memory")));
  StatusOr<FitReply> reply = fit.get();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(reply.status().message(), "silo 'hospital-a': out of memory");
  EXPECT_TRUE(hand->Sync());
  HonestRound(*hand, "hospital-a", "run", 2);  // the silo is free again
}

// --- Sizes -------------------------------------------------------------------

// The update announced in a result header, then chunks that do not add up to
// it: the fetch fails naming the silo, the stream stays open, and the next
// update is assembled from scratch.
TEST_F(OrchestratorServiceTest, AnUpdateWhoseChunksDoNotAddUpToTheAnnouncedSizeFailsItsFetch) {
  const std::string& bytes = update_bytes_;
  const size_t n = bytes.size();
  const std::string more =
      "update from silo 'hospital-a': more bytes than the announced " + std::to_string(n);
  struct Case {
    const char* name;
    std::vector<fedsilo::v1::SiloMessage> chunks;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"one byte more in the last chunk", {ChunkMessage(bytes + "x", true)}, more},
      {"a byte in a chunk after the size",
       {ChunkMessage(bytes, false), ChunkMessage("x", true)},
       more},
      {"one byte fewer",
       {ChunkMessage(bytes.substr(0, n - 1), true)},
       "update from silo 'hospital-a': " + std::to_string(n - 1) + " bytes arrived, " +
           std::to_string(n) + " were announced"},
      {"half, then an empty last chunk",
       {ChunkMessage(bytes.substr(0, n / 2), false), ChunkMessage("", true)},
       "update from silo 'hospital-a': " + std::to_string(n / 2) + " bytes arrived, " +
           std::to_string(n) + " were announced"},
  };
  auto hand = Connect("hospital-a");
  int round = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto fit = StartFit("hospital-a", "run", ++round);
    fedsilo::v1::TaskHeader task;
    ASSERT_TRUE(hand->ReadTask(&task));
    ASSERT_TRUE(hand->Send(ResultFor(task, n, 5)));
    StatusOr<FitReply> reply = fit.get();
    ASSERT_TRUE(reply.ok()) << reply.status();
    auto fetch = std::async(std::launch::async, [&] { return reply->source->Fetch(); });
    fedsilo::v1::UploadRequest upload;
    ASSERT_TRUE(hand->ReadUpload(&upload));
    for (const fedsilo::v1::SiloMessage& m : c.chunks) ASSERT_TRUE(hand->Send(m));
    StatusOr<ModelState> fetched = fetch.get();
    ASSERT_FALSE(fetched.ok());
    EXPECT_EQ(fetched.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(fetched.status().message(), "silo 'hospital-a': " + c.why);
    EXPECT_TRUE(hand->Sync());
  }
  HonestRound(*hand, "hospital-a", "run", ++round);
}

TEST_F(OrchestratorServiceTest, AnUpdateThatIsNotAModelFileFailsItsFetchNamingTheSilo) {
  auto hand = Connect("hospital-a");
  auto fit = StartFit("hospital-a", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(hand->ReadTask(&task));
  const std::string garbage(update_bytes_.size(), 'g');
  ASSERT_TRUE(hand->Send(ResultFor(task, garbage.size(), 5)));
  StatusOr<FitReply> reply = fit.get();
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto fetch = std::async(std::launch::async, [&] { return reply->source->Fetch(); });
  fedsilo::v1::UploadRequest upload;
  ASSERT_TRUE(hand->ReadUpload(&upload));
  ASSERT_TRUE(hand->Send(ChunkMessage(garbage, true)));
  StatusOr<ModelState> fetched = fetch.get();
  ASSERT_FALSE(fetched.ok());
  EXPECT_THAT(std::string(fetched.status().message()),
              StartsWith("silo 'hospital-a': update from 'hospital-a': "));
  EXPECT_THAT(std::string(fetched.status().message()), HasSubstr("not a fedsilo model file"));
  EXPECT_TRUE(hand->Sync());
}

// The most a result may announce: an update has the model's layout (twice
// the model's bytes and 1 MiB of slack); statistics and scores are at most
// kMaxSmallReplyBytes. The most is taken; one byte more closes the stream.
TEST_F(OrchestratorServiceTest,
       AResultMayAnnounceTheMostItsTaskKindAllowsAndOneByteMoreClosesTheStream) {
  const uint64_t model_bytes = SerializeModelState(global_).size();
  struct Case {
    TaskKind kind;
    uint64_t most;
  };
  size_t sessions = 0;
  for (const Case& c : {Case{TaskKind::kFit, 2 * model_bytes + (1 << 20)},
                        Case{TaskKind::kStatistics, kMaxSmallReplyBytes},
                        Case{TaskKind::kEvaluate, kMaxSmallReplyBytes}}) {
    SCOPED_TRACE(std::string(TaskKindName(c.kind)));
    auto hand = Connect("hospital-a");
    ++sessions;
    {
      auto fit = StartFit("hospital-a", "run", 1, c.kind);
      fedsilo::v1::TaskHeader task;
      ASSERT_TRUE(hand->ReadTask(&task));
      // A statistics task carries no model: the empty one on the wire.
      ASSERT_EQ(task.model_bytes(), c.kind == TaskKind::kStatistics
                                        ? SerializeModelState(ModelState()).size()
                                        : model_bytes);
      ASSERT_TRUE(hand->Send(ResultFor(task, c.most, 5)));
      StatusOr<FitReply> reply = fit.get();
      ASSERT_TRUE(reply.ok()) << reply.status();
    }  // the reply dropped unfetched: the silo is free
    auto fit = StartFit("hospital-a", "run", 2, c.kind);
    fedsilo::v1::TaskHeader task;
    ASSERT_TRUE(hand->ReadTask(&task));
    ASSERT_TRUE(hand->Send(ResultFor(task, c.most + 1, 5)));
    const std::string why =
        "silo 'hospital-a' announced an update of " + std::to_string(c.most + 1) +
        " bytes for a task whose update is at most " + std::to_string(c.most) + " bytes";
    StatusOr<FitReply> reply = fit.get();
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(reply.status().message(), "silo 'hospital-a': silo disconnected: " + why);
    const Status ended = hand->Finish();
    EXPECT_EQ(ended.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ended.message(), why);
    ASSERT_TRUE(listener_.WaitDisconnected(sessions));
    EXPECT_FALSE(service_->IsConnected("hospital-a"));
  }
}

// With no model sent on the session yet, a secure-aggregation reply is at
// most kMaxSmallReplyBytes; one byte more fails the step and closes the stream.
TEST_F(OrchestratorServiceTest,
       ASecureReplyAnnouncedAboveKMaxSmallReplyBytesFailsTheStepAndClosesTheStream) {
  auto hand = Connect("hospital-a");
  auto step = std::async(std::launch::async, [&] {
    return service_->SecureStep("hospital-a", {"run", 1, "request"}, 2 * kCeiling);
  });
  fedsilo::v1::SecureStep sent;
  ASSERT_TRUE(hand->ReadSecureStep(&sent));
  EXPECT_EQ(sent.payload(), "request");
  ASSERT_TRUE(hand->Send(SecureReplyFor(sent, kMaxSmallReplyBytes + 1)));
  const std::string why = "silo 'hospital-a' announced a secure-aggregation reply of " +
                          std::to_string(kMaxSmallReplyBytes + 1) + " bytes; at most " +
                          std::to_string(kMaxSmallReplyBytes) + " are expected";
  StatusOr<std::string> reply = step.get();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reply.status().message(), "silo 'hospital-a': " + why);
  const Status ended = hand->Finish();
  EXPECT_EQ(ended.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ended.message(), why);
}

// Chunks of a secure-aggregation reply that do not add up to its announced
// size fail the step naming the silo; the stream stays open, and an honest
// reply (and an empty one) goes through after.
TEST_F(OrchestratorServiceTest, ASecureReplyWhoseChunksDoNotAddUpFailsTheStepNamingTheSilo) {
  auto hand = Connect("hospital-a");
  struct Case {
    std::vector<fedsilo::v1::SiloMessage> chunks;
    StatusOr<std::string> expected;
  };
  const std::string from = "silo 'hospital-a': secure-aggregation reply from silo 'hospital-a': ";
  const std::vector<Case> cases = {
      {{ChunkMessage("abcd", true)},
       absl::InvalidArgumentError(from + "more bytes than the announced 3")},
      {{ChunkMessage("ab", true)},
       absl::InvalidArgumentError(from + "2 bytes arrived, 3 were announced")},
      {{ChunkMessage("ab", false), ChunkMessage("c", true)}, std::string("abc")},
  };
  int round = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected.ok() ? "honest" : std::string(c.expected.status().message()));
    auto step = std::async(std::launch::async, [&, r = ++round] {
      return service_->SecureStep("hospital-a", {"run", r, "request"}, 2 * kCeiling);
    });
    fedsilo::v1::SecureStep sent;
    ASSERT_TRUE(hand->ReadSecureStep(&sent));
    ASSERT_TRUE(hand->Send(SecureReplyFor(sent, 3)));
    for (const fedsilo::v1::SiloMessage& m : c.chunks) ASSERT_TRUE(hand->Send(m));
    StatusOr<std::string> reply = step.get();
    EXPECT_EQ(reply.status(), c.expected.status());
    if (c.expected.ok() && reply.ok()) {
      EXPECT_EQ(*reply, *c.expected);
    }
    EXPECT_TRUE(hand->Sync());
  }
  auto empty = std::async(std::launch::async, [&] {
    return service_->SecureStep("hospital-a", {"run", ++round, "request"}, 2 * kCeiling);
  });
  fedsilo::v1::SecureStep sent;
  ASSERT_TRUE(hand->ReadSecureStep(&sent));
  ASSERT_TRUE(hand->Send(SecureReplyFor(sent, 0)));  // no chunks follow
  StatusOr<std::string> reply = empty.get();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "");
}

// An upload that ends halfway -- its run cancelled while the chunks were on
// their way (CancelRun) -- leaves nothing behind for the next upload on the
// same stream: the silo's next update arrives whole. (The stream once kept
// the first half and appended the next upload to it, refusing it as "more
// bytes than the announced".)
TEST_F(OrchestratorServiceTest, AnUploadCancelledHalfwayDoesNotSpoilTheNextUpload) {
  auto hand = Connect("hospital-a");
  auto fit = StartFit("hospital-a", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(hand->ReadTask(&task));
  ASSERT_TRUE(hand->Send(ResultFor(task, update_bytes_.size(), 5)));
  StatusOr<FitReply> reply = fit.get();
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto fetch = std::async(std::launch::async, [&] { return reply->source->Fetch(); });
  fedsilo::v1::UploadRequest upload;
  ASSERT_TRUE(hand->ReadUpload(&upload));
  const size_t half = update_bytes_.size() / 2;
  ASSERT_TRUE(hand->Send(ChunkMessage(update_bytes_.substr(0, half), false)));
  ASSERT_TRUE(hand->Sync());  // the first half was taken
  service_->CancelRun("run", "the job was aborted");
  StatusOr<ModelState> cancelled = fetch.get();
  ASSERT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled) << cancelled.status();
  // The silo sends the rest (as SiloClient does: it reads the Abort only
  // after its upload); nobody asked for it any more.
  ASSERT_TRUE(hand->Send(ChunkMessage(update_bytes_.substr(half), true)));
  ASSERT_TRUE(hand->Sync());

  HonestRound(*hand, "hospital-a", "next-run", 1);
}

// --- Reconnects --------------------------------------------------------------

// A second stream with the same certificate (a restarted silo, or a copy of
// its key) takes the silo's name: the task out on the first stream fails, and
// the next task goes to the second.
TEST_F(OrchestratorServiceTest, ASecondStreamOfTheSameSiloTakesOverAndTheFirstStreamsTaskFails) {
  auto first = Connect("hospital-a");
  auto fit = StartFit("hospital-a", "run", 1);
  fedsilo::v1::TaskHeader task;
  ASSERT_TRUE(first->ReadTask(&task));
  auto second = Connect("hospital-a");
  StatusOr<FitReply> reply = fit.get();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(reply.status().message(), "silo 'hospital-a': the silo reconnected");
  const std::vector<RecordingListener::Event> connected = listener_.connected();
  ASSERT_EQ(connected.size(), 2u);
  EXPECT_NE(connected[0].session, connected[1].session);
  EXPECT_EQ(service_->ConnectedSilos(), std::vector<std::string>{"hospital-a"});

  // The first stream's late answer to its task counts for nothing. (Sync:
  // handled before the round below; whether the first stream is still open
  // is not this test's business.)
  first->Send(ResultFor(task, update_bytes_.size(), 99));
  first->Sync();
  HonestRound(*second, "hospital-a", "run", 2);
}

}  // namespace
}  // namespace fedsilo::transport
