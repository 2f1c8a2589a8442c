// The federation as separate processes: `fedsilo silo` agents dialling a real
// orchestrator endpoint over mutual TLS on 127.0.0.1, with faults.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/job_config.h"
#include "core/model_state_file.h"
#include "core/subprocess.h"
#include "federation_processes.h"
#include "orchestrator/orchestrator.h"
#include "orchestrator/silo_registry.h"
#include "secure/provisioner.h"
#include "silo_stream.h"
#include "strategy/fed_avg.h"
#include "test_util.h"
#include "transport/chunks.h"
#include "transport/orchestrator_service.h"
#include "transport/tls.h"

namespace fedsilo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string Fresh(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/procfed_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Runs `fedsilo <args>`, which should succeed.
testing_util::Output RunOk(const std::string& args) {
  testing_util::Output o = testing_util::Fedsilo(args);
  EXPECT_EQ(o.status, 0) << args << "\n" << o.err;
  return o;
}

using testing_util::LastJson;

std::string Bytes(const std::string& path) { return testing_util::ReadAll(path); }

TEST(ProcessFederationTest, ProcessesReachTheSameModelAsInProcessSimulation) {
  const std::string dir = Fresh("same");
  const std::string job = std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/digits.yaml";
  nlohmann::json in_process = LastJson(
      RunOk("run " + job + " --set training.rounds=4 --quiet --json --workdir " + dir).out);
  const testing_util::Output run =
      RunOk("run " + job + " --set training.rounds=4 --processes --json --workdir " + dir);
  const std::string out = run.out + run.err;
  EXPECT_THAT(out, HasSubstr("5 processes, gRPC + mutual TLS on 127.0.0.1"));
  nlohmann::json processes = LastJson(run.out);
  EXPECT_EQ(processes["rounds_completed"], 4);
  EXPECT_TRUE(processes["overhead_fraction"].is_null());
  EXPECT_DOUBLE_EQ(processes["final"]["accuracy"].get<double>(),
                   in_process["final"]["accuracy"].get<double>());
  // Same seeds, same partitions, lossless transfer, same folding order.
  EXPECT_TRUE(Bytes(processes["final_model"]) == Bytes(in_process["final_model"]))
      << "the process federation's model differs from the in-process one";
  // Each silo process logged its session.
  const std::string run_dir = processes["run_dir"];
  EXPECT_THAT(Bytes(run_dir + "/silos/silo-2.log"), HasSubstr("silo 'silo-2' of federation"));
  // The throwaway federation's kits are in the run folder: one per process.
  auto orchestrator_kit = secure::LoadKit(run_dir + "/kits/orchestrator");
  ASSERT_TRUE(orchestrator_kit.ok()) << orchestrator_kit.status();
  EXPECT_EQ(orchestrator_kit->kind, secure::ParticipantKind::kOrchestrator);
  for (int i = 1; i <= 5; ++i) {
    const std::string silo = "silo-" + std::to_string(i);
    auto kit = secure::LoadKit(run_dir + "/kits/" + silo);
    ASSERT_TRUE(kit.ok()) << kit.status();
    EXPECT_EQ(kit->name, silo);
    EXPECT_EQ(kit->kind, secure::ParticipantKind::kSilo);
  }
}

// Secure aggregation over real gRPC: the masks cancel exactly and the integer
// sum is exact, so processes reach the in-process model bit for bit.
TEST(ProcessFederationTest, SecureAggregationOverProcessesMatchesInProcess) {
  const std::string dir = Fresh("secagg");
  const std::string job = std::string(FEDSILO_TEST_SOURCE_DIR) +
                          "/examples/digits.yaml --set training.rounds=3 "
                          "--set privacy.secure_aggregation=true";
  nlohmann::json in_process =
      LastJson(RunOk("run " + job + " --quiet --json --workdir " + dir).out);
  const testing_util::Output run = RunOk("run " + job + " --processes --json --workdir " + dir);
  const std::string out = run.out + run.err;
  EXPECT_THAT(out, HasSubstr("secure  aggregation: threshold 4 of 5"));
  nlohmann::json processes = LastJson(run.out);
  ASSERT_EQ(processes["rounds_completed"], 3) << out;
  EXPECT_TRUE(Bytes(processes["final_model"]) == Bytes(in_process["final_model"]));
  // The plain run differs only by the fixed-point rounding.
  nlohmann::json plain = LastJson(
      RunOk("run " + std::string(FEDSILO_TEST_SOURCE_DIR) +
            "/examples/digits.yaml --set training.rounds=3 --quiet --json --workdir " + dir)
          .out);
  EXPECT_NEAR(plain["final"]["loss"].get<double>(), processes["final"]["loss"].get<double>(), 1e-3);
  EXPECT_FALSE(Bytes(plain["final_model"]) == Bytes(processes["final_model"]));
  const std::string metrics = Bytes(processes["run_dir"].get<std::string>() + "/metrics.jsonl");
  EXPECT_THAT(metrics, HasSubstr("global/secagg_quantization_error"));
  EXPECT_THAT(metrics, Not(HasSubstr("silo-1/num_examples")));
}

// An orchestrator endpoint in this process -- the test drives its rounds and
// injects faults -- and `fedsilo silo` child processes of a provisioned
// federation (testing_util::Federation) dialling it.
class InProcessOrchestrator {
 public:
  // Silos a, b and c, plus `extra_silos`.
  explicit InProcessOrchestrator(const std::string& name,
                                 const std::vector<std::string>& extra_silos = {})
      : processes_("procfed_" + name, ExtraSilos(extra_silos)) {
    files_ =
        std::move(transport::LoadTlsFiles(*secure::LoadKit(dir() + "/kits/orchestrator"))).value();
    service_ = std::make_unique<transport::OrchestratorService>(
        files_.ca_pem, &registry_, [] { return std::chrono::system_clock::now(); });
    server_ =
        std::move(transport::GrpcServer::Start(
                      "127.0.0.1:0", transport::MakeServerCredentials(files_), {service_.get()}))
            .value();
    processes_.UseOrchestratorAt(server_->port());
  }
  // The silo processes go first: the endpoint they talk to is torn down after.
  ~InProcessOrchestrator() { processes_.StopAll(); }

  const std::string& ca_pem() const { return files_.ca_pem; }

  void StartSilo(const std::string& name) {
    sessions_before_[name] = Sessions(name);
    processes_.StartSilo(name);
  }
  void Kill(const std::string& name, int signal) { processes_.Kill(name, signal); }

  // Waits until each of `names` has opened a session since it was last
  // started (or connected by hand): a killed silo's old session does not count.
  bool WaitConnected(const std::vector<std::string>& names) {
    return testing_util::WaitUntil([&] {
      for (const auto& n : names) {
        if (Sessions(n) <= sessions_before_[n]) return false;
      }
      return true;
    });
  }

  // One connection (60 s round timeout) per named silo, in order.
  std::vector<std::unique_ptr<transport::SiloConnection>> Connections(
      std::initializer_list<const char*> names) {
    std::vector<std::unique_ptr<transport::SiloConnection>> out;
    for (const char* n : names) {
      out.push_back(std::make_unique<transport::RemoteSiloConnection>(n, service_.get(), 60s));
    }
    return out;
  }

  // A silo session driven by hand over the real stream: `name`'s kit, mutual
  // TLS, the hello already sent (check `stream` and `hello_sent`).
  std::unique_ptr<testing_util::HandSiloStream> ConnectByHand(const std::string& name) {
    sessions_before_[name] = Sessions(name);
    auto files = transport::LoadTlsFiles(*secure::LoadKit(dir() + "/kits/" + name));
    return std::make_unique<testing_util::HandSiloStream>(grpc::CreateChannel(
        "localhost:" + std::to_string(port()), transport::MakeChannelCredentials(*files)));
  }

  transport::OrchestratorService* service() { return service_.get(); }
  int port() const { return server_->port(); }
  const std::string& dir() const { return processes_.dir(); }

 private:
  static std::vector<std::pair<std::string, std::string>> ExtraSilos(
      const std::vector<std::string>& names) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& n : names) out.emplace_back(n, "silo");
    return out;
  }

  // Sessions `silo` has opened so far that are still open, counted: 0 when
  // it is not connected now.
  int Sessions(const std::string& silo) const {
    for (const auto& s : registry_.Snapshot()) {
      if (s.name == silo) return s.connected ? s.sessions : -s.sessions;
    }
    return 0;
  }

  testing_util::Federation processes_;
  transport::TlsFiles files_;
  orchestrator::SiloRegistry registry_;
  std::unique_ptr<transport::OrchestratorService> service_;
  std::unique_ptr<transport::GrpcServer> server_;
  std::map<std::string, int> sessions_before_;
};

// The zero-initialised layout of the logistic model on digits (64 -> 10).
ModelState DigitsLogisticModel() {
  ModelState m;
  EXPECT_TRUE(m.Add(Tensor("fc1.weight", DType::kFloat32, {10, 64})).ok());
  EXPECT_TRUE(m.Add(Tensor("fc1.bias", DType::kFloat32, {10})).ok());
  return m;
}

class ConstantEvaluator : public orchestrator::ModelEvaluator {
 public:
  StatusOr<std::map<std::string, double>> Evaluate(const ModelState&) override {
    return std::map<std::string, double>{{"loss", 0}, {"accuracy", 0}};
  }
};

// Kills one silo after round 1 and restarts it after round 2.
class KillAndRestart : public orchestrator::RoundObserver {
 public:
  explicit KillAndRestart(InProcessOrchestrator* f) : f_(f) {}
  Status OnRoundEnd(const orchestrator::RoundSummary& s, const ModelState&, int) override {
    succeeded.push_back(s.silos_succeeded);
    failures.push_back(s.failures);
    if (s.round == 1) f_->Kill("c", SIGKILL);
    if (s.round == 2) {
      f_->StartSilo("c");
      reconnected = f_->WaitConnected({"a", "b", "c"});
    }
    return absl::OkStatus();
  }
  std::vector<int> succeeded;
  std::vector<std::vector<std::string>> failures;
  bool reconnected = false;

 private:
  InProcessOrchestrator* f_;
};

TEST(ProcessFederationTest, KilledSiloIsDroppedAndTakesPartAgainAfterRestart) {
  InProcessOrchestrator fed("kill");
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  ASSERT_TRUE(fed.WaitConnected({"a", "b", "c"}));

  auto job = ParseJobConfig(
      "data: {dataset: digits}\nmodel: {name: logistic}\ntraining: {rounds: 4}\n"
      "federation: {silos: [a, b, c], min_silos: 2, round_timeout: 60}\n",
      "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  auto connections = fed.Connections({"a", "b", "c"});
  ModelState initial = DigitsLogisticModel();
  ConstantEvaluator eval;
  KillAndRestart observer(&fed);
  orchestrator::Orchestrator o(*job, {"run-kill", 3}, std::move(connections),
                               std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto result = o.Run(std::move(initial), &observer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(observer.succeeded, (std::vector<int>{3, 2, 3, 3}));
  ASSERT_EQ(observer.failures[1].size(), 1u);
  EXPECT_THAT(observer.failures[1][0], HasSubstr("c: silo 'c'"));
  EXPECT_TRUE(observer.reconnected);
}

// A digits job on silos a, b and c with secure aggregation at `threshold`.
JobConfig SecureDigitsJob(int rounds, int threshold) {
  auto job =
      ParseJobConfig(absl::StrCat("data: {dataset: digits}\nmodel: {name: logistic}\n",
                                  "training: {rounds: ", rounds, "}\n",
                                  "federation: {silos: [a, b, c], min_silos: 2, "
                                  "round_timeout: 60}\n",
                                  "privacy: {secure_aggregation: {threshold: ", threshold, "}}\n"),
                     "job.yaml");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

TEST(ProcessFederationTest, SecureAggregationGoesOnWithoutAKilledSiloAboveTheThreshold) {
  InProcessOrchestrator fed("secagg-kill");
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  ASSERT_TRUE(fed.WaitConnected({"a", "b", "c"}));
  const JobConfig job = SecureDigitsJob(4, 2);
  ConstantEvaluator eval;
  KillAndRestart observer(&fed);
  orchestrator::Orchestrator o(job, {"run-secagg-kill", 3}, fed.Connections({"a", "b", "c"}),
                               std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto result = o.Run(DigitsLogisticModel(), &observer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(observer.succeeded, (std::vector<int>{3, 2, 3, 3}));
  ASSERT_EQ(observer.failures[1].size(), 1u);
  EXPECT_THAT(observer.failures[1][0], HasSubstr("c: silo 'c'"));
}

// SIGKILLs a silo process right after it answered the masked-input stage,
// so that it is gone when the orchestrator asks for its survivor signature
// and the unmasking shares.
class KillAfterMaskedInput : public transport::SiloConnection {
 public:
  KillAfterMaskedInput(std::unique_ptr<transport::SiloConnection> inner, InProcessOrchestrator* fed)
      : inner_(std::move(inner)), fed_(fed) {}
  const std::string& silo_name() const override { return inner_->silo_name(); }
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
    steps_ = 0;
    return inner_->RunTask(r);
  }
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest& r) override {
    StatusOr<std::string> reply = inner_->SecureStep(r);
    if (++steps_ == 3) fed_->Kill(silo_name(), SIGKILL);  // 3: masked input
    return reply;
  }

 private:
  std::unique_ptr<transport::SiloConnection> inner_;
  InProcessOrchestrator* fed_;
  int steps_ = 0;
};

struct Summaries : orchestrator::RoundObserver {
  Status OnRoundEnd(const orchestrator::RoundSummary& s, const ModelState&, int) override {
    all.push_back(s);
    return absl::OkStatus();
  }
  std::vector<orchestrator::RoundSummary> all;
};

// A silo killed after sending its masked input still counts: its self mask is
// rebuilt from the others' shares, and the model is the one of a round where
// nobody left, bit for bit.
TEST(ProcessFederationTest, SecureAggregationCountsASiloKilledAfterItsMaskedInput) {
  InProcessOrchestrator fed("secagg-late-kill");
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  ASSERT_TRUE(fed.WaitConnected({"a", "b", "c"}));
  const JobConfig job = SecureDigitsJob(1, 2);
  ConstantEvaluator eval;
  // As in a real federation, the orchestrator checks the silos' signatures:
  // the silo processes sign with their kits' keys.
  orchestrator::OrchestratorOptions options{"run-calm", 3};
  options.federation_ca_pem = fed.ca_pem();
  orchestrator::Orchestrator calm(job, options, fed.Connections({"a", "b", "c"}),
                                  std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto expected = calm.Run(DigitsLogisticModel(), nullptr);
  ASSERT_TRUE(expected.ok()) << expected.status();

  auto connections = fed.Connections({"a", "b", "c"});
  connections[2] = std::make_unique<KillAfterMaskedInput>(std::move(connections[2]), &fed);
  Summaries summaries;
  options.run_id = "run-killed";
  orchestrator::Orchestrator killed(job, options, std::move(connections),
                                    std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto result = killed.Run(DigitsLogisticModel(), &summaries);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(summaries.all.size(), 1u);
  EXPECT_EQ(summaries.all[0].silos_succeeded, 3);
  ASSERT_EQ(summaries.all[0].failures.size(), 1u);
  EXPECT_THAT(summaries.all[0].failures[0], HasSubstr("c: silo 'c'"));
  EXPECT_EQ(SerializeModelState(result->final_model), SerializeModelState(expected->final_model));
}

TEST(ProcessFederationTest, SecureAggregationBelowTheThresholdFailsCleanly) {
  InProcessOrchestrator fed("secagg-few");
  fed.StartSilo("a");
  fed.StartSilo("b");  // c never starts
  ASSERT_TRUE(fed.WaitConnected({"a", "b"}));
  JobConfig job = SecureDigitsJob(1, 3);
  job.federation.round_retries = 0;  // (c is not coming back)
  ConstantEvaluator eval;
  orchestrator::Orchestrator o(job, {"run-secagg-few", 3}, fed.Connections({"a", "b", "c"}),
                               std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto result = o.Run(DigitsLogisticModel(), nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(),
              HasSubstr("only 2 of 3 sampled silos trained, below the secure-aggregation "
                        "threshold of 3"));
  EXPECT_THAT(result.status().message(), HasSubstr("c: silo 'c' is not connected"));
}

TEST(ProcessFederationTest, TooFewSilosFailTheRoundNamingTheMissing) {
  InProcessOrchestrator fed("few");
  fed.StartSilo("a");  // b never starts
  ASSERT_TRUE(fed.WaitConnected({"a"}));
  auto job = ParseJobConfig(
      "data: {dataset: digits}\nmodel: {name: logistic}\ntraining: {rounds: 1}\n"
      "federation: {silos: [a, b], min_silos: 2, round_retries: 0}\n",
      "job.yaml");
  auto connections = fed.Connections({"a", "b"});
  ModelState initial = DigitsLogisticModel();
  ConstantEvaluator eval;
  orchestrator::Orchestrator o(*job, {"run-few", 2}, std::move(connections),
                               std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto result = o.Run(std::move(initial), nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("only 1 of 2 sampled silos"));
  EXPECT_THAT(result.status().message(), HasSubstr("b: silo 'b' is not connected"));
}

// A hand-driven silo that answers a task first with a replayed (wrong-nonce)
// result and a mismatched round, then correctly: only the correct one counts,
// and its update is pulled with an UploadRequest.
TEST(ProcessFederationTest, StaleAndReplayedResultsAreIgnored) {
  InProcessOrchestrator fed("stale");
  auto silo = fed.ConnectByHand("a");
  ASSERT_TRUE(silo->hello_sent);
  ASSERT_TRUE(fed.WaitConnected({"a"}));

  JobConfig job;
  job.federation.silos = {"a"};
  ModelState global;
  ASSERT_TRUE(global.Add(Tensor::FromFloats("w", {2}, {1, 2})).ok());
  std::thread orchestrator_side;
  StatusOr<transport::FitReply> reply = absl::UnknownError("not run");
  orchestrator_side = std::thread([&] {
    transport::TaskRequest request{"job-1", 3, 7, &job, nullptr, transport::FitTask{&global}};
    reply = fed.service()->RunTask("a", request, 120s);
  });

  fedsilo::v1::OrchestratorMessage m;
  fedsilo::v1::TaskHeader task;
  while (silo->stream->Read(&m)) {
    if (m.has_task()) task = m.task();
    if (m.has_chunk() && m.chunk().last()) break;
  }
  EXPECT_EQ(task.round(), 3);
  EXPECT_EQ(task.nonce().size(), 16u);
  auto send_header = [&](const std::string& nonce, int round, int64_t examples, uint64_t bytes) {
    fedsilo::v1::SiloMessage h;
    h.mutable_result()->set_job_id("job-1");
    h.mutable_result()->set_round(round);
    h.mutable_result()->set_nonce(nonce);
    h.mutable_result()->set_num_examples(examples);
    h.mutable_result()->set_update_bytes(bytes);
    ASSERT_TRUE(silo->stream->Write(h));
  };
  ModelState update;
  ASSERT_TRUE(update.Add(Tensor::FromFloats("w", {2}, {0.5f, 0.5f})).ok());
  const std::string bytes = SerializeModelState(update);
  send_header(std::string(16, 'x'), 3, 100, bytes.size());  // replayed: another task's nonce
  send_header(task.nonce(), 2, 200, bytes.size());          // stale: another round
  send_header(task.nonce(), 3, 5, bytes.size());            // the answer
  orchestrator_side.join();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->num_examples, 5);
  ASSERT_NE(reply->source, nullptr);
  EXPECT_TRUE(reply->update.empty());  // still at the silo

  // The orchestrator pulls the update when it is ready to fold it.
  StatusOr<ModelState> fetched = absl::UnknownError("not run");
  std::thread fetcher([&] { fetched = reply->source->Fetch(); });
  bool asked = false;
  while (silo->stream->Read(&m)) {
    if (m.has_upload()) {
      asked = m.upload().nonce() == task.nonce() && m.upload().round() == 3;
      break;
    }
  }
  EXPECT_TRUE(asked);
  transport::ForEachChunk(bytes, [&](const fedsilo::v1::Chunk& c) {
    fedsilo::v1::SiloMessage cm;
    *cm.mutable_chunk() = c;
    return silo->stream->Write(cm);
  });
  fetcher.join();
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(fetched->Find("w")->floats()[0], 0.5f);
  silo->context.TryCancel();
}

// Aborting a run while a silo holds a finished update: the silo drops the
// update on the Abort, so the orchestrator must not wait for it.
TEST(ProcessFederationTest, CancelledRunIsNotWaitedForAnUpdateTheSiloDropped) {
  InProcessOrchestrator fed("cancel");
  auto silo = fed.ConnectByHand("a");
  ASSERT_TRUE(silo->hello_sent);
  ASSERT_TRUE(fed.WaitConnected({"a"}));

  JobConfig job;
  job.federation.silos = {"a"};
  ModelState global;
  ASSERT_TRUE(global.Add(Tensor::FromFloats("w", {2}, {1, 2})).ok());
  StatusOr<transport::FitReply> reply = absl::UnknownError("not run");
  // A short timeout: without the cancellation the fetch would wait this long
  // and then report a deadline instead.
  std::thread orchestrator_side([&] {
    transport::TaskRequest request{"job-1", 1, 7, &job, nullptr, transport::FitTask{&global}};
    reply = fed.service()->RunTask("a", request, 3s);
  });
  fedsilo::v1::OrchestratorMessage m;
  fedsilo::v1::TaskHeader task;
  while (silo->stream->Read(&m)) {
    if (m.has_task()) task = m.task();
    if (m.has_chunk() && m.chunk().last()) break;
  }
  fedsilo::v1::SiloMessage h;
  h.mutable_result()->set_job_id(task.job_id());
  h.mutable_result()->set_round(task.round());
  h.mutable_result()->set_nonce(task.nonce());
  h.mutable_result()->set_num_examples(5);
  h.mutable_result()->set_update_bytes(100);
  ASSERT_TRUE(silo->stream->Write(h));
  orchestrator_side.join();
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_NE(reply->source, nullptr);

  fed.service()->CancelRun("job-1", "the job was aborted");
  StatusOr<ModelState> fetched = reply->source->Fetch();
  EXPECT_TRUE(absl::IsCancelled(fetched.status())) << fetched.status();
  EXPECT_THAT(std::string(fetched.status().message()), HasSubstr("the job was aborted"));
  silo->context.TryCancel();
}

// A silo that sends garbage next to a real one: a wrong-shaped update in
// round 1, a NaN in round 2, a sound update in round 3. The garbage is
// rejected and named, the rounds go on with the real silo, and the sound
// update counts.
TEST(ProcessFederationTest, GarbageUpdatesAreRejectedAndTheRoundGoesOn) {
  InProcessOrchestrator fed("garbage", {"bad"});
  fed.StartSilo("a");
  auto silo = fed.ConnectByHand("bad");
  ASSERT_TRUE(silo->hello_sent);
  ASSERT_TRUE(fed.WaitConnected({"a", "bad"}));

  std::thread bad([&] {
    fedsilo::v1::OrchestratorMessage m;
    fedsilo::v1::TaskHeader task;
    std::string pending;
    while (silo->stream->Read(&m)) {
      if (m.has_task()) {
        task = m.task();
      } else if (m.has_chunk() && m.chunk().last()) {
        ModelState update;
        if (task.round() == 1) {
          EXPECT_TRUE(update.Add(Tensor("fc1.weight", DType::kFloat32, {10, 63})).ok());
          EXPECT_TRUE(update.Add(Tensor("fc1.bias", DType::kFloat32, {10})).ok());
        } else {
          EXPECT_TRUE(update.Add(Tensor("fc1.weight", DType::kFloat32, {10, 64})).ok());
          Tensor bias("fc1.bias", DType::kFloat32, {10});
          if (task.round() == 2) bias.floats()[3] = std::nanf("");
          EXPECT_TRUE(update.Add(std::move(bias)).ok());
        }
        pending = SerializeModelState(update);
        fedsilo::v1::SiloMessage h;
        h.mutable_result()->set_job_id(task.job_id());
        h.mutable_result()->set_round(task.round());
        h.mutable_result()->set_nonce(task.nonce());
        h.mutable_result()->set_num_examples(100);
        h.mutable_result()->set_update_bytes(pending.size());
        if (!silo->stream->Write(h)) break;
      } else if (m.has_upload()) {
        transport::ForEachChunk(pending, [&](const fedsilo::v1::Chunk& c) {
          fedsilo::v1::SiloMessage cm;
          *cm.mutable_chunk() = c;
          return silo->stream->Write(cm);
        });
      }
    }
  });

  auto job = ParseJobConfig(
      "data: {dataset: digits}\nmodel: {name: logistic}\ntraining: {rounds: 3}\n"
      "federation: {silos: [a, bad], min_silos: 1, round_timeout: 60}\n",
      "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  auto connections = fed.Connections({"a", "bad"});
  ModelState initial = DigitsLogisticModel();
  struct Record : orchestrator::RoundObserver {
    Status OnRoundEnd(const orchestrator::RoundSummary& s, const ModelState&, int) override {
      succeeded.push_back(s.silos_succeeded);
      failures.push_back(s.failures);
      return absl::OkStatus();
    }
    std::vector<int> succeeded;
    std::vector<std::vector<std::string>> failures;
  } record;
  ConstantEvaluator eval;
  orchestrator::Orchestrator o(*job, {"run-garbage", 2}, std::move(connections),
                               std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  auto result = o.Run(std::move(initial), &record);
  silo->context.TryCancel();
  bad.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(record.succeeded, (std::vector<int>{1, 1, 2}));
  ASSERT_EQ(record.failures[0].size(), 1u);
  EXPECT_THAT(record.failures[0][0],
              HasSubstr("bad: update rejected: tensor 'fc1.weight' has shape [10, 63]"));
  ASSERT_EQ(record.failures[1].size(), 1u);
  EXPECT_THAT(record.failures[1][0],
              HasSubstr("bad: update rejected: tensor 'fc1.bias' holds nan"));
  EXPECT_TRUE(record.failures[2].empty());
}

}  // namespace
}  // namespace fedsilo
