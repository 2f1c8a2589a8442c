// The real federation as its users run it: `fedsilo orchestrator` and
// `fedsilo silo` processes on 127.0.0.1, driven with the user commands
// (`submit`, `status`, `logs`, `abort`, `download`), with faults: the
// orchestrator killed mid-job, missing silos, wrong kits, plaintext peers.
// Suites whose tests only look at one federation share it (a fixture that
// starts it once); scenarios that change it as they go have their own.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/file_seal.h"
#include "core/model_state_file.h"
#include "core/subprocess.h"
#include "fake_mlflow.h"
#include "federation_processes.h"
#include "fedsilo/v1/jobs.grpc.pb.h"
#include "ml/scripted_module.h"
#include "orchestrator/job_store.h"
#include "secure/audit_log.h"
#include "secure/provisioner.h"
#include "secure/storage_keys.h"
#include "test_util.h"
#include "transport/tls.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using testing_util::Binary;
using testing_util::CountInFile;
using testing_util::Federation;
using testing_util::kEventCeiling;
using testing_util::LastJson;
using testing_util::Output;
using testing_util::Read;
using testing_util::SameValues;
using testing_util::Tensors;
using testing_util::WaitForText;
using testing_util::WaitUntil;

constexpr char kJob[] =
    "name: daemon-digits\n"
    "data: {dataset: digits}\n"
    "model: {name: logistic}\n"
    "training: {rounds: 4, learning_rate: 0.1}\n"
    "federation: {silos: [a, b, c], min_silos: 2, wait_for_silos: 180}\n";

// One federation for all the tests of a suite: SetUpTestSuite() provisions it
// and runs `Suite::Start` once (an orchestrator and its silos take seconds to
// start, a job more), and each test checks one thing about what it left. A
// test must not depend on the order the suite's tests run in: it reads what
// Start left, or changes what no other test of its suite reads. CTest runs
// each such suite as one test (tests/CMakeLists.txt); the folder is per
// process all the same, removed when the suite passed and kept for a look
// when it failed.
//
// `Suite` has `static constexpr char kName[]` and `static std::string
// Start(Federation&)`, which returns "" or what went wrong.
template <typename Suite>
class SharedFederationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fed_ =
        std::make_unique<Federation>(std::string(Suite::kName) + "-" + std::to_string(::getpid()));
    not_started_ = Suite::Start(*fed_);
  }
  static void TearDownTestSuite() {
    const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
    const bool passed = suite != nullptr && !suite->Failed();
    const std::string dir = fed_->dir();
    fed_.reset();  // stops its processes
    if (passed) fs::remove_all(dir);
  }
  void SetUp() override { ASSERT_EQ(not_started_, "") << "the suite's federation did not start"; }

  static Federation& fed() { return *fed_; }
  static std::string OrchestratorLog() { return Read(fed_->dir() + "/orchestrator.log"); }

 private:
  static inline std::unique_ptr<Federation> fed_;
  static inline std::string not_started_;
};

// The entries of the audit log at `path`, in order; sealed entries are opened
// with the ring at `ring_path` ("" for a log kept in the clear). An entry that
// does not parse or open fails the test and is left out.
std::vector<nlohmann::json> AuditEntries(const std::string& path,
                                         const std::string& ring_path = "") {
  std::optional<secure::AeadFileSealer> sealer;
  if (!ring_path.empty()) {
    StatusOr<secure::KeyRing> ring = secure::LoadKeyRing(ring_path);
    EXPECT_TRUE(ring.ok()) << ring.status();
    if (ring.ok()) sealer.emplace(*ring);
  }
  std::vector<nlohmann::json> entries;
  std::vector<std::string> lines = absl::StrSplit(Read(path), '\n', absl::SkipEmpty());
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string source = path + ":" + std::to_string(i + 1);
    std::string text = lines[i];
    StatusOr<std::optional<std::string>> sealed = SealedBytesOfLine(text, source);
    EXPECT_TRUE(sealed.ok()) << sealed.status();
    if (!sealed.ok()) continue;
    if (sealed->has_value()) {
      EXPECT_TRUE(sealer.has_value()) << source << " is sealed; give its ring";
      if (!sealer.has_value()) continue;
      StatusOr<std::string> plain =
          sealer->Open(**sealed, SealedLineName(path, static_cast<int64_t>(i + 1)), source);
      EXPECT_TRUE(plain.ok()) << plain.status();
      if (!plain.ok()) continue;
      text = *plain;
    }
    nlohmann::json entry = nlohmann::json::parse(text, nullptr, false);
    EXPECT_FALSE(entry.is_discarded()) << source << ": " << text;
    if (!entry.is_discarded()) entries.push_back(std::move(entry));
  }
  return entries;
}

// The entries of `event` among `entries`.
std::vector<nlohmann::json> EntriesOf(const std::vector<nlohmann::json>& entries,
                                      const std::string& event) {
  std::vector<nlohmann::json> of;
  for (const auto& e : entries) {
    if (e["event"] == event) of.push_back(e);
  }
  return of;
}

// Alice's job on silos a, b and c, submitted and waited for with the user
// commands, its model downloaded, and the same job file run in simulation:
// all done when the tests start.
class OrchestratorDaemonSubmitTest : public SharedFederationTest<OrchestratorDaemonSubmitTest> {
 public:
  static constexpr char kName[] = "submit";
  static std::string Start(Federation& fed) {
    if (!fed.StartOrchestrator()) return Read(fed.dir() + "/orchestrator.log");
    for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
    job_ = fed.WriteJob("job", kJob);
    submitted_ = fed.User("submit " + job_);
    if (submitted_.status != 0) return "submit: " + submitted_.err;
    waited_ = fed.User("status job-1 --wait");
    if (waited_.status != 0) return "job-1: " + waited_.out + waited_.err;
    model_ = fed.dir() + "/model.fsm";
    downloaded_ = fed.User("download job-1 --out " + model_);
    if (downloaded_.status != 0) return "download: " + downloaded_.err;
    // The same job file in simulation: same seeds and partitions.
    Output sim = fed.Run("run " + job_ + " --quiet --json --workdir " + fed.dir());
    if (sim.status != 0) return "simulation: " + sim.err;
    simulated_ = LastJson(sim.out);
    return "";
  }

 protected:
  static inline std::string job_, model_;
  static inline Output submitted_, waited_, downloaded_;
  static inline nlohmann::json simulated_;  // the simulation's --json summary
};

TEST_F(OrchestratorDaemonSubmitTest, TheStartUpLinesSayMutualTlsAndFilesNotEncrypted) {
  EXPECT_THAT(OrchestratorLog(), HasSubstr("(mutual TLS)"));
  EXPECT_THAT(OrchestratorLog(), HasSubstr("files at rest are NOT encrypted"));
}

TEST_F(OrchestratorDaemonSubmitTest, SubmitPrintsTheJobIdAndStatusWaitsUntilTheLastRound) {
  EXPECT_EQ(submitted_.out, "job-1\n");
  EXPECT_THAT(waited_.out, HasSubstr("4 of 4 done"));
}

TEST_F(OrchestratorDaemonSubmitTest, StatusShowsTheOwnerEveryRoundAndEverySilosRounds) {
  nlohmann::json status = fed().Status("job-1");
  EXPECT_EQ(status["state"], "done");
  EXPECT_EQ(status["owner"], "alice");
  EXPECT_EQ(status["rounds_completed"], 4);
  ASSERT_EQ(status["rounds"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    const nlohmann::json& round = status["rounds"][i];
    EXPECT_EQ(round["round"], i + 1) << round;
    EXPECT_GT(round["seconds"].get<double>(), 0) << round;
    EXPECT_EQ(round["silos_succeeded"], 3) << round;
    EXPECT_TRUE(round["failures"].empty()) << round;  // no silo was dropped
  }
  ASSERT_EQ(status["silos"].size(), 3u);
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (const auto& s : status["silos"]) {
    EXPECT_EQ(s["rounds_taken_part"], 4) << s;
    EXPECT_EQ(s["connected"], true) << s;
    EXPECT_LE(s["last_seen"].get<int64_t>(), now + 1) << s;
    EXPECT_GT(s["last_seen"].get<int64_t>(), now - 3600) << s;
  }
  ASSERT_TRUE(status["latest_metrics"].contains("global/test_accuracy"));
}

TEST_F(OrchestratorDaemonSubmitTest, JobsListsTheJobAndLogsShowItsLastRound) {
  nlohmann::json jobs = LastJson(fed().User("jobs --json").out);
  ASSERT_EQ(jobs["jobs"].size(), 1u);
  const nlohmann::json& job = jobs["jobs"][0];
  EXPECT_EQ(job["id"], "job-1");
  EXPECT_EQ(job["state"], "done");
  EXPECT_EQ(job["owner"], "alice");
  EXPECT_EQ(job["rounds_completed"], 4);
  EXPECT_EQ(job["rounds_total"], 4);
  // The table says the same.
  const std::string table = fed().User("jobs").out;
  EXPECT_THAT(table, ::testing::ContainsRegex("job-1 +done +4/4 +alice"));
  EXPECT_THAT(fed().User("logs job-1").out, HasSubstr("round 4/4 done"));
}

// The federation's model is the simulation's, value for value, and so is
// its final accuracy.
TEST_F(OrchestratorDaemonSubmitTest, TheDownloadedModelIsTheSimulationsValueForValue) {
  EXPECT_THAT(downloaded_.out, HasSubstr("after round 4"));
  EXPECT_TRUE(SameValues(Tensors(model_), Tensors(simulated_["final_model"])));
  nlohmann::json status = fed().Status("job-1");
  EXPECT_DOUBLE_EQ(status["latest_metrics"]["global/test_accuracy"].get<double>(),
                   simulated_["final"]["accuracy"].get<double>());
}

// `fedsilo runs` with the user kit reads the orchestrator's run store and
// prints what the store itself says.
TEST_F(OrchestratorDaemonSubmitTest, RunsWithTheUserKitPrintWhatTheStoreSays) {
  const std::string state = " --workdir " + fed().dir() + "/state";
  for (const std::string command : {"runs list --json", "runs show job-1 --json"}) {
    Output remote = fed().User(command);
    Output local = fed().Run(command + state);
    ASSERT_EQ(remote.status, 0) << command << ": " << remote.err;
    ASSERT_EQ(local.status, 0) << command << ": " << local.err;
    EXPECT_EQ(LastJson(remote.out), LastJson(local.out)) << command;
  }
  Output exported = fed().User("runs export job-1 --csv");
  ASSERT_EQ(exported.status, 0) << exported.err;
  EXPECT_EQ(exported.out, fed().Run("runs export job-1 --csv" + state).out);
  EXPECT_EQ(std::count(exported.out.begin(), exported.out.end(), '\n'), 5);
}

TEST_F(OrchestratorDaemonSubmitTest, RunsShowAndCompareReadTheJobsRun) {
  nlohmann::json shown = LastJson(fed().User("runs show job-1 --json").out);
  EXPECT_EQ(shown["owner"], "alice");
  EXPECT_EQ(shown["rounds"].size(), 4u);
  EXPECT_EQ(shown["silos"].size(), 3u);
  EXPECT_DOUBLE_EQ(shown["final_metrics"]["global/test_accuracy"].get<double>(),
                   simulated_["final"]["accuracy"].get<double>());
  Output compared = fed().User("runs compare job-1 " + shown["run_id"].get<std::string>());
  ASSERT_EQ(compared.status, 0) << compared.err;
  EXPECT_THAT(compared.out, HasSubstr("global/test_accuracy"));
}

TEST_F(OrchestratorDaemonSubmitTest, RunsRefuseAnUnknownRunAndASiloKit) {
  Output unknown = fed().User("runs show no-such-run");
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, HasSubstr("no run 'no-such-run'"));
  Output as_silo = fed().User("runs list", "a");
  EXPECT_EQ(as_silo.status, 2);
  EXPECT_THAT(as_silo.err, HasSubstr("user"));
}

// The audit trails: who submitted, which model went to which silo and what
// came back, as digests that the orchestrator and the silo agree on.
TEST_F(OrchestratorDaemonSubmitTest, BothAuditTrailsRecordTheSubmitterAndAgreeOnDigests) {
  const std::string log = fed().dir() + "/state/audit.log";
  Output verified = fed().Run("audit verify " + log + " --json");
  ASSERT_EQ(verified.status, 0) << verified.out << verified.err;
  EXPECT_GT(LastJson(verified.out)["entries"].get<int>(), 3 * 4 * 2);
  std::map<std::string, nlohmann::json> first;  // event -> first entry
  std::vector<std::string> lines = absl::StrSplit(Read(log), '\n', absl::SkipEmpty());
  for (const std::string& line : lines) {
    nlohmann::json e = nlohmann::json::parse(line);
    if (!first.count(e["event"])) first[e["event"]] = e;
  }
  ASSERT_TRUE(first.count("job_submitted") && first.count("model_sent") &&
              first.count("update_received") && first.count("aggregate") &&
              first.count("job_done"));
  EXPECT_EQ(first["job_submitted"]["data"]["user"], "alice");
  EXPECT_EQ(first["job_submitted"]["actor"], "orchestrator 'orchestrator'");
  std::string silo_a_model, silo_a_update;
  for (const std::string& line : lines) {
    nlohmann::json e = nlohmann::json::parse(line);
    if (e["data"].value("silo", "") != "a" || e["data"].value("round", "") != "1") continue;
    if (e["event"] == "model_sent") silo_a_model = e["data"]["model"];
    if (e["event"] == "update_received") silo_a_update = e["data"]["update"];
  }
  const std::string silo_log = fed().dir() + "/kits/a/state/audit.log";
  EXPECT_EQ(fed().Run("audit verify " + silo_log).status, 0);
  const std::string silo_text = Read(silo_log);
  EXPECT_THAT(silo_text, HasSubstr("\"model\":\"" + silo_a_model + "\""));
  EXPECT_THAT(silo_text, HasSubstr("\"update\":\"" + silo_a_update + "\""));
  EXPECT_THAT(silo_text, HasSubstr("\"actor\":\"silo 'a'\""));
}

// One edited entry is found, by line. Edited in a copy: the suite's other
// tests read the log itself.
TEST_F(OrchestratorDaemonSubmitTest, AuditVerifyFindsAnEditedEntryByItsLine) {
  const std::string log = fed().dir() + "/edited-audit.log";
  std::vector<std::string> lines =
      absl::StrSplit(Read(fed().dir() + "/state/audit.log"), '\n', absl::SkipEmpty());
  ASSERT_GT(lines.size(), 6u);
  lines[5] = absl::StrReplaceAll(lines[5], {{"\"data\":{", "\"data\":{\"note\":\"x\","}});
  std::ofstream(log, std::ios::trunc) << absl::StrJoin(lines, "\n") << "\n";
  Output broken = fed().Run("audit verify " + log);
  EXPECT_EQ(broken.status, 2);
  EXPECT_THAT(broken.err, HasSubstr(log + ":6: entry 6 was altered"));
}

// A download that cannot be written (here: its file is /dev/full, as on a
// full disk) fails saying so, and leaves neither the file nor its partial.
TEST_F(OrchestratorDaemonSubmitTest, ADownloadThatCannotBeWrittenFailsAndLeavesNothing) {
  const std::string out = fed().dir() + "/full-disk.fsm";
  fs::create_symlink("/dev/full", out + ".partial");
  Output full = fed().User("download job-1 --out " + out);
  EXPECT_NE(full.status, 0);
  EXPECT_THAT(full.err, HasSubstr(out + ".partial: write failed"));
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::is_symlink(out + ".partial"));
}

// tracking.mlflow in the real federation: the orchestrator sends the run to
// MLflow; silo a's policy keeps its metrics in, b's and c's go out.
TEST(OrchestratorDaemonTest, JobsAreExportedToMlflowAsEachSilosPolicyAllows) {
  testing_util::FakeMlflow mlflow;
  Federation fed("mlflow");
  ASSERT_TRUE(fed.StartOrchestrator(0, {"--mlflow-allow", mlflow.uri()}))
      << Read(fed.dir() + "/orchestrator.log");
  // A server the operator did not list gets nothing -- no run, no token.
  testing_util::FakeMlflow elsewhere;
  const std::string other = fed.WriteJob(
      "other", std::string(kJob) + "tracking: {mlflow: {uri: '" + elsewhere.uri() + "'}}\n");
  Output refused = fed.User("submit " + other);
  EXPECT_EQ(refused.status, 2);
  EXPECT_THAT(refused.err, HasSubstr("tracking.mlflow.uri: '" + elsewhere.uri() +
                                     "' is not a tracking server this orchestrator exports to (it "
                                     "allows " +
                                     mlflow.uri()));
  EXPECT_TRUE(elsewhere.runs().empty());
  std::ofstream(fed.dir() + "/policy-a.yaml") << "datasets:\n  digits: {export_metrics: false}\n";
  fed.StartSilo("a", {"--policy", fed.dir() + "/policy-a.yaml"});
  fed.StartSilo("b");
  fed.StartSilo("c");
  const std::string job = fed.WriteJob(
      "job", std::string(kJob) + "tracking: {mlflow: {uri: '" + mlflow.uri() + "'}}\n");
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err;
  const nlohmann::json status = fed.Status("job-1");
  const std::string model = fed.dir() + "/model.fsm";
  ASSERT_EQ(fed.User("download job-1 --out " + model).status, 0);

  // The job is done first; its MLflow run is ended right after.
  testing_util::FakeMlflow::Run run;
  WaitUntil([&] {
    auto runs = mlflow.runs();
    if (runs.size() == 1) run = runs.begin()->second;
    return run.status == "FINISHED";
  });
  ASSERT_EQ(run.status, "FINISHED") << Read(fed.dir() + "/orchestrator.log");
  EXPECT_EQ(run.name, status["run_id"]);
  EXPECT_EQ(run.tags["fedsilo.job_id"], "job-1");
  EXPECT_EQ(run.tags["mlflow.user"], "alice");
  EXPECT_EQ(run.params["federation.silos"], "[a, b, c]");
  std::map<std::string, int> per_source;  // "a", "b", "c", "global" -> metrics
  double final_accuracy = -1;
  for (const auto& m : run.metrics) {
    per_source[m.key.substr(0, m.key.find('/'))]++;
    if (m.key == "global/test_accuracy" && m.step == 4) final_accuracy = m.value;
  }
  EXPECT_EQ(per_source.count("a"), 0u);
  EXPECT_GT(per_source["b"], 4);
  EXPECT_EQ(per_source["b"], per_source["c"]);
  EXPECT_DOUBLE_EQ(final_accuracy, status["latest_metrics"]["global/test_accuracy"].get<double>());
  bool model_sent = false;
  for (const auto& [path, bytes] : mlflow.artifacts()) {
    if (path.size() > 15 && path.substr(path.size() - 15) == "final_model.fsm") {
      model_sent = true;
      EXPECT_EQ(bytes, Read(model));
    }
  }
  EXPECT_TRUE(model_sent);
  // The orchestrator's own store has every silo's metrics, a's included.
  nlohmann::json shown = LastJson(fed.User("runs show job-1 --json").out);
  EXPECT_EQ(shown["silos"][0]["silo"], "a");
  EXPECT_EQ(shown["silos"][0]["rounds"], 4);
}

// model.torchscript in the real federation: the module goes with the job to
// the orchestrator and on to the silos, which keep it by its digest; a silo
// whose policy lists other modules refuses it.
// The plaintext of the sealed file at `path`, opened with the ring at
// `ring_path` under its sealed name; "" if it does not open.
std::string OpenSealed(const std::string& path, const std::string& ring_path) {
  StatusOr<secure::KeyRing> ring = secure::LoadKeyRing(ring_path);
  if (!ring.ok()) return "";
  StatusOr<std::string> plain =
      secure::AeadFileSealer(*ring).Open(Read(path), SealedName(path), path);
  return plain.ok() ? *plain : "";
}

// The orchestrator and silo a seal their state (each with its own ring), silo
// b does not: the kept copies of the module and the run's final_model.pt are
// sealed where a ring is, and still load.
TEST(OrchestratorDaemonTest, TorchScriptJobsShipTheirModuleToTheSilos) {
  Federation fed("torchscript");
  const std::string orchestrator_ring = fed.dir() + "/orchestrator-keys.yaml";
  const std::string a_ring = fed.dir() + "/a-keys.yaml";
  ASSERT_EQ(fed.Run("keys new " + orchestrator_ring).status, 0);
  ASSERT_EQ(fed.Run("keys new " + a_ring).status, 0);
  ASSERT_TRUE(fed.StartOrchestrator(0, {"--storage-keys", orchestrator_ring}))
      << Read(fed.dir() + "/orchestrator.log");
  const std::string module =
      std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/torchscript/digits_net.pt";
  const std::string digest = secure::BytesDigest(Read(module));
  // Default deny: a runs the module because its policy lists it, b because
  // its owner allowed any (a test federation), c -- without a policy -- not.
  std::ofstream(fed.dir() + "/policy-a.yaml")
      << "datasets:\n  digits: {allowed_models: [sha256:" << digest << "]}\n";
  std::ofstream(fed.dir() + "/policy-b.yaml") << "allow_any_module: true\n";
  fed.StartSilo("a", {"--policy", fed.dir() + "/policy-a.yaml", "--storage-keys", a_ring});
  fed.StartSilo("b", {"--policy", fed.dir() + "/policy-b.yaml"});
  fed.StartSilo("c");
  const std::string job =
      fed.WriteJob("ts", "name: ts\ndata: {dataset: digits}\nmodel: {torchscript: " + module +
                             "}\ntraining: {rounds: 3, learning_rate: 0.05}\n"
                             "federation: {silos: [a, b, c], min_silos: 2, wait_for_silos: 180}\n");
  Output submitted = fed.User("submit " + job);
  ASSERT_EQ(submitted.status, 0) << submitted.err;
  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err << Read(fed.dir() + "/orchestrator.log");
  const nlohmann::json status = fed.Status("job-1");
  EXPECT_GT(status["latest_metrics"]["global/test_accuracy"].get<double>(), 0.7);
  EXPECT_THAT(fed.User("logs job-1").out,
              HasSubstr("model sha256:" + digest + " is not among its allowed_models"));
  EXPECT_THAT(Read(fed.dir() + "/b.log"), HasSubstr("allow_any_module: true"));
  // Kept by digest where it was taken in, byte for byte (sealed where there
  // is a ring); nowhere it was refused.
  const std::string kept_here = fed.dir() + "/state/models/" + digest + ".pt";
  const std::string kept_a = fed.dir() + "/kits/a/state/models/" + digest + ".pt";
  EXPECT_EQ(Read(kept_here).substr(0, 5), "FSEAL");
  EXPECT_EQ(OpenSealed(kept_here, orchestrator_ring), Read(module));
  EXPECT_EQ(Read(kept_a).substr(0, 5), "FSEAL");
  EXPECT_EQ(OpenSealed(kept_a, a_ring), Read(module));
  EXPECT_EQ(Read(fed.dir() + "/kits/b/state/models/" + digest + ".pt"), Read(module));
  EXPECT_FALSE(fs::exists(fed.dir() + "/kits/c/state/models/" + digest + ".pt"));
  nlohmann::json shown = LastJson(fed.User("runs show job-1 --json").out);
  EXPECT_THAT(shown["job_yaml"].get<std::string>(), HasSubstr("torchscript: sha256:" + digest));
  const std::string run_id = shown["run_id"];
  const std::string final_pt = fed.dir() + "/state/runs/" + run_id + "/final_model.pt";
  EXPECT_EQ(Read(final_pt).substr(0, 5), "FSEAL");
  // Exported, it is a plain TorchScript file again, and a valid module.
  Output exported = fed.Run("export " + run_id + " --workdir " + fed.dir() + "/state --out " +
                            fed.dir() + "/final.pt --storage-keys " + orchestrator_ring);
  ASSERT_EQ(exported.status, 0) << exported.err;
  EXPECT_NE(Read(fed.dir() + "/final.pt").substr(0, 5), "FSEAL");
  Output checked = fed.Run("check-module " + fed.dir() + "/final.pt");
  EXPECT_EQ(checked.status, 0) << checked.err;
}

// A job on the silos' own CSV files: the orchestrator asks for their
// statistics first, then trains and has the silos score each global model.
// The same job in simulation gives the same model.
TEST(OrchestratorDaemonTest, JobsOnTheSilosOwnCsvFilesComputeStatisticsThenTrain) {
  Federation fed("tabular");
  const std::string data = std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/fraud/data/";
  fs::copy_file(data + "east.csv", fed.dir() + "/a.csv");
  fs::copy_file(data + "west.csv", fed.dir() + "/b.csv");
  fs::copy_file(data + "south.csv", fed.dir() + "/c.csv");
  std::ofstream(fed.dir() + "/datasets.yaml")
      << "datasets:\n  digits: {builtin: digits, share: job}\n"
      << "  transactions: {csv: '{silo}.csv', label: is_fraud, categorical: [merchant], "
         "missing: impute}\n";
  ASSERT_TRUE(fed.StartOrchestrator()) << Read(fed.dir() + "/orchestrator.log");
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  const std::string job =
      fed.WriteJob("fraud",
                   "name: fraud\nseed: 1\ndata: {dataset: transactions, silo_test_fraction: 0.3}\n"
                   "preprocess:\n  scale: standard\n  categories:\n"
                   "    merchant: [grocery, restaurant, online, travel, atm, electronics]\n"
                   "model: {name: mlp, hidden: [32]}\n"
                   "training: {rounds: 3, local_epochs: 2, batch_size: 64, optimizer: adam, "
                   "learning_rate: 0.003}\n"
                   "federation: {silos: [a, b, c], wait_for_silos: 180}\n");
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err << Read(fed.dir() + "/orchestrator.log");
  const nlohmann::json status = fed.Status("job-1");
  const nlohmann::json& latest = status["latest_metrics"];
  EXPECT_GT(latest["global/test_auc"].get<double>(), 0.8);
  EXPECT_TRUE(latest.contains("global/test_precision") && latest.contains("global/test_recall"));
  EXPECT_TRUE(latest.contains("c/global_test_auc"));
  EXPECT_EQ(latest["global/rows"], 4549);  // round 0: the statistics
  EXPECT_THAT(fed.User("logs job-1").out, HasSubstr("statistics: 4549 training rows, 12 features"));
  nlohmann::json shown = LastJson(fed.User("runs show job-1 --json").out);
  EXPECT_THAT(shown["job_yaml"].get<std::string>(),
              HasSubstr("features: [amount, hour, merchant=grocery"));

  // In simulation, with a catalog naming the same files: the same model.
  std::ofstream(fed.dir() + "/sim-catalog.yaml")
      << "datasets:\n  transactions: {csv: '{silo}.csv', label: is_fraud, "
         "categorical: [merchant], missing: impute}\n";
  Output sim = fed.Run("run " + job + " --set data.catalog=" + fed.dir() +
                       "/sim-catalog.yaml --quiet --json --workdir " + fed.dir() + "/sim");
  ASSERT_EQ(sim.status, 0) << sim.err;
  nlohmann::json summary = LastJson(sim.out);
  const std::string model = fed.dir() + "/fraud.fsm";
  ASSERT_EQ(fed.User("download job-1 --out " + model).status, 0);
  EXPECT_TRUE(SameValues(Tensors(model), Tensors(summary["final_model"])));
  EXPECT_DOUBLE_EQ(latest["global/test_auc"].get<double>(), summary["final"]["auc"].get<double>());

  // predict reads the orchestrator's run like a work folder's.
  Output predicted = fed.Run("predict job-1 --workdir " + fed.dir() + "/state --data " + fed.dir() +
                             "/c.csv --json");
  ASSERT_EQ(predicted.status, 0) << predicted.err;
  EXPECT_EQ(LastJson(predicted.out)["rows"], 1500);
}

// With a storage key ring: checkpoints and the final model are sealed on disk,
// resuming opens the sealed checkpoint, and the download is the plain model.
TEST(OrchestratorDaemonTest, KilledOrchestratorResumesFromTheLastCompletedRound) {
  Federation fed("restart");
  const std::string ring = fed.dir() + "/ring.yaml";
  ASSERT_EQ(fed.Run("keys new " + ring).status, 0);
  ASSERT_TRUE(fed.StartOrchestrator(0, {"--storage-keys", ring}));
  EXPECT_THAT(Read(fed.dir() + "/orchestrator.log"),
              HasSubstr("files at rest are encrypted (XChaCha20-Poly1305)"));
  const int port = fed.port();
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  // Rounds slow enough (an MLP, many local epochs: about half a second) to kill
  // the orchestrator in the middle of the job.
  const std::string job = fed.WriteJob("job", std::string(kJob) + "checkpoint: {every: 3}\n");
  const std::string sets =
      " --set training.rounds=8 --set model.name=mlp --set training.local_epochs=50"
      // A server optimizer: its moments must come back from the checkpoint.
      " --set strategy.name=fedadam";
  ASSERT_EQ(fed.User("submit " + job + sets).status, 0);

  // Once round 3 is saved (its checkpoint is there), the silos are stopped
  // in their tracks, so no later round can finish, and the orchestrator is
  // killed: the kill lands in the middle of the job however slow the machine.
  const std::string runs = fed.dir() + "/state/runs";
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::error_code ignored;
        for (const auto& e : fs::directory_iterator(runs, ignored)) {
          if (fs::exists(e.path() / "checkpoints/round-0003.strategy.fsm")) return true;
        }
        return false;
      },
      kEventCeiling, 5ms))
      << Read(fed.dir() + "/orchestrator.log");
  for (const char* s : {"a", "b", "c"}) fed.Signal(s, SIGSTOP);
  fed.Kill("orchestrator", SIGKILL);
  for (const char* s : {"a", "b", "c"}) fed.Signal(s, SIGCONT);
  // The store as it is now, kept to be put back later as an attacker would.
  const std::string db = fed.dir() + "/state/fedsilo.db";
  const std::string older_db = Read(db);
  const std::string older_wal = Read(db + "-wal");
  // What the store holds after the kill, read before the restart can add to it.
  std::vector<orchestrator::RoundRecord> rounds_before;
  {
    auto keys = secure::LoadKeyRing(ring);
    ASSERT_TRUE(keys.ok()) << keys.status();
    auto store = orchestrator::JobStore::Open(fed.dir() + "/state/fedsilo.db",
                                              std::make_shared<secure::AeadFileSealer>(*keys));
    ASSERT_TRUE(store.ok()) << store.status();
    auto rounds = (*store)->Rounds("job-1");
    ASSERT_TRUE(rounds.ok()) << rounds.status();
    rounds_before = *rounds;
  }
  const int done_before = static_cast<int>(rounds_before.size());
  ASSERT_GE(done_before, 2);
  ASSERT_LT(done_before, 8) << "the job finished before it could be killed";
  ASSERT_TRUE(fed.StartOrchestrator(port, {"--storage-keys", ring}))
      << Read(fed.dir() + "/orchestrator.log");

  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err;
  nlohmann::json after = fed.Status("job-1");
  ASSERT_EQ(after["rounds"].size(), 8u);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(after["rounds"][r]["round"], r + 1);
  // Rounds completed before the kill were kept, not run again.
  for (int r = 0; r < done_before; ++r) {
    EXPECT_EQ(after["rounds"][r]["finished"].get<double>(), rounds_before[r].finished)
        << "round " << r + 1;
  }
  EXPECT_THAT(fed.User("logs job-1").out,
              HasSubstr("resuming after round " + std::to_string(done_before)));
  // Only the checkpoints checkpoint.every asks for are kept.
  std::vector<std::string> kept;
  const std::string run_dir = fed.dir() + "/state/runs/" + after["run_id"].get<std::string>();
  for (const auto& e : fs::directory_iterator(run_dir + "/checkpoints")) {
    kept.push_back(e.path().filename().string());
  }
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<std::string>{"round-0003.fsm", "round-0003.strategy.fsm",
                                            "round-0006.fsm", "round-0006.strategy.fsm",
                                            "round-0008.fsm", "round-0008.strategy.fsm"}));
  for (const std::string& f :
       {run_dir + "/checkpoints/round-0003.fsm", run_dir + "/checkpoints/round-0003.strategy.fsm",
        run_dir + "/final_model.fsm"}) {
    EXPECT_EQ(Read(f).substr(0, 5), "FSEAL") << f;
  }

  // Resuming gives the uninterrupted run's model: sampling and seeds depend
  // only on the round.
  const std::string model = fed.dir() + "/model.fsm";
  ASSERT_EQ(fed.User("download job-1 --out " + model).status, 0);
  Output sim = fed.Run("run " + job + sets + " --quiet --json --workdir " + fed.dir());
  ASSERT_EQ(sim.status, 0) << sim.err;
  EXPECT_TRUE(SameValues(Tensors(model), Tensors(LastJson(sim.out)["final_model"])));

  // The attack: the store put back as it was at the kill, rounds behind. It
  // opens with the ring, but its generation is older than the last one the
  // audit log recorded: the orchestrator will not start on it.
  fed.Kill("orchestrator", SIGTERM);
  const std::string newest_db = Read(db);
  ASSERT_FALSE(fs::exists(db + "-wal"));  // a clean stop folds the journal in
  fs::remove(db + "-shm");
  std::ofstream(db, std::ios::binary | std::ios::trunc) << older_db;
  std::ofstream(db + "-wal", std::ios::binary | std::ios::trunc) << older_wal;
  EXPECT_FALSE(fed.StartOrchestrator(port, {"--storage-keys", ring}))
      << "the orchestrator started on an older store";
  EXPECT_THAT(Read(fed.dir() + "/orchestrator.log"), HasSubstr("fedsilo.db: generation"));
  EXPECT_THAT(Read(fed.dir() + "/orchestrator.log"), HasSubstr("an older copy was put back"));
  fs::remove(db + "-wal");
  fs::remove(db + "-shm");
  std::ofstream(db, std::ios::binary | std::ios::trunc) << newest_db;
  EXPECT_TRUE(fed.StartOrchestrator(port, {"--storage-keys", ring}))
      << Read(fed.dir() + "/orchestrator.log");
}

// The orchestrator's web endpoint (--http): the dashboard, its JSON API and
// Prometheus /metrics over HTTPS, for users' certificates only. Alice's job-1
// (4 rounds on silos a, b and c) is done when the tests start.
class OrchestratorDaemonWebTest : public SharedFederationTest<OrchestratorDaemonWebTest> {
 public:
  static constexpr char kName[] = "web";
  static std::string Start(Federation& fed) {
    // A refused TLS handshake closes the socket under the client's feet.
    signal(SIGPIPE, SIG_IGN);
    if (!fed.StartOrchestrator(0, {"--http", "127.0.0.1:0"})) {
      return Read(fed.dir() + "/orchestrator.log");
    }
    port_ = fed.HttpPort();
    if (port_ == 0) return "no http_endpoint: " + Read(fed.dir() + "/orchestrator.log");
    for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
    Output submitted = fed.User("submit " + fed.WriteJob("job", kJob));
    if (submitted.status != 0) return "submit: " + submitted.err;
    Output waited = fed.User("status job-1 --wait");
    if (waited.status != 0) return "job-1: " + waited.out + waited.err;
    return "";
  }

 protected:
  // An HTTPS client of the endpoint holding `who`'s certificate ("": none).
  static std::unique_ptr<httplib::SSLClient> Client(const std::string& who) {
    const std::string kit = fed().dir() + "/kits/" + who + "/" + who;
    auto c = who.empty() ? std::make_unique<httplib::SSLClient>("127.0.0.1", port_)
                         : std::make_unique<httplib::SSLClient>("127.0.0.1", port_, kit + ".crt",
                                                                kit + ".key");
    c->enable_server_certificate_verification(false);  // the server's side is under test
    c->set_connection_timeout(5);
    return c;
  }

  static inline int port_ = 0;
};

TEST_F(OrchestratorDaemonWebTest, TheStartUpLineSaysUserCertificatesOnly) {
  EXPECT_THAT(OrchestratorLog(), HasSubstr("user certificates only"));
}

TEST_F(OrchestratorDaemonWebTest, MetricsCountTheRoundsTheConnectedSilosAndTheJobsByState) {
  auto metrics = Client("alice")->Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  ASSERT_EQ(metrics->status, 200) << metrics->body;
  EXPECT_THAT(metrics->body, HasSubstr("fedsilo_rounds_completed_total 4"));
  EXPECT_THAT(metrics->body, HasSubstr("fedsilo_round_duration_seconds_count 4"));
  EXPECT_THAT(metrics->body, HasSubstr("fedsilo_silos_connected 3"));
  EXPECT_THAT(metrics->body, HasSubstr("fedsilo_jobs{state=\"done\"} 1"));
}

TEST_F(OrchestratorDaemonWebTest, MetricsCountAtLeastTheModelBytesSentAndReceived) {
  auto metrics = Client("alice")->Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  ASSERT_EQ(metrics->status, 200) << metrics->body;
  for (const std::string counter :
       {"\nfedsilo_transport_bytes_sent_total ", "\nfedsilo_transport_bytes_received_total "}) {
    const size_t at = metrics->body.find(counter);  // the sample, not its # HELP line
    ASSERT_NE(at, std::string::npos) << counter << metrics->body;
    // 4 rounds x 3 silos x a model of 64 x 10 + 10 floats, each way.
    EXPECT_GT(std::stod(metrics->body.substr(at + counter.size())), 4 * 3 * 650 * 4.0)
        << counter << metrics->body;
  }
}

TEST_F(OrchestratorDaemonWebTest, ApiRunsListsTheDoneJobWithItsOwner) {
  auto runs = Client("alice")->Get("/api/runs");
  ASSERT_TRUE(runs) << httplib::to_string(runs.error());
  ASSERT_EQ(runs->status, 200);
  nlohmann::json list = nlohmann::json::parse(runs->body);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["job_id"], "job-1");
  EXPECT_EQ(list[0]["state"], "done");
  EXPECT_EQ(list[0]["owner"], "alice");
}

TEST_F(OrchestratorDaemonWebTest, TheDashboardPageIsServed) {
  auto page = Client("alice")->Get("/");
  ASSERT_TRUE(page) << httplib::to_string(page.error());
  EXPECT_THAT(page->body, HasSubstr("<title>fedsilo</title>"));
}

TEST_F(OrchestratorDaemonWebTest, ASiloCertificateIsAnswered403NamingTheSilo) {
  auto silo = Client("a")->Get("/api/runs");
  ASSERT_TRUE(silo) << httplib::to_string(silo.error());
  EXPECT_EQ(silo->status, 403);
  EXPECT_THAT(silo->body, HasSubstr("silo 'a'"));
}

// What a TLS client got from 127.0.0.1:`port` for one HTTP request: the
// server's bytes, and OpenSSL's reason when the connection failed.
struct TlsExchange {
  std::string answer;
  std::string tls_error;  // "" when none
};

// Sends `GET path` over TLS, with the certificate and key at `cert`/`key`,
// or none when they are "". The server's certificate is not checked.
TlsExchange ExchangeOverTls(int port, const std::string& path, const std::string& cert = "",
                            const std::string& key = "") {
  TlsExchange result;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {"", "socket() failed"};
  // A server that neither answers nor closes fails the test, not hangs it.
  const timeval limit{static_cast<time_t>(kEventCeiling.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        &SSL_CTX_free);
  if (!cert.empty() &&
      (SSL_CTX_use_certificate_file(ctx.get(), cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)) {
    ::close(fd);
    return {"", "cannot load " + cert};
  }
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), &SSL_free);
  ERR_clear_error();
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return {"", "connect() failed"};
  }
  SSL_set_fd(ssl.get(), fd);
  if (SSL_connect(ssl.get()) == 1) {
    const std::string request =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) > 0) {
      char buffer[4096];
      for (int n; (n = SSL_read(ssl.get(), buffer, sizeof(buffer))) > 0;) {
        result.answer.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  if (const unsigned long e = ERR_peek_last_error(); e != 0) {
    const char* reason = ERR_reason_error_string(e);
    result.tls_error = reason != nullptr ? reason : "unknown";
  }
  ssl.reset();
  ::close(fd);
  return result;
}

// Without a client certificate there is no TLS session at all: the server
// ends the handshake with an alert, before any HTTP is read or answered (a
// 401 or 403 answer would be a session that the server then refused).
TEST_F(OrchestratorDaemonWebTest, WithoutACertificateTheTlsHandshakeFails) {
  const std::string kit = fed().dir() + "/kits/alice/alice";
  // The control: the same exchange with a user's certificate is answered.
  const TlsExchange alice = ExchangeOverTls(port_, "/api/runs", kit + ".crt", kit + ".key");
  EXPECT_THAT(alice.answer, ::testing::StartsWith("HTTP/1.1 200")) << alice.tls_error;
  const TlsExchange nobody = ExchangeOverTls(port_, "/api/runs");
  EXPECT_EQ(nobody.answer, "") << "an HTTP answer without a certificate";
  // Under TLS 1.3 the client learns of the refusal from the server's alert,
  // unless the connection's reset outran it (then no error is queued at all).
  if (!nobody.tls_error.empty()) {
    EXPECT_THAT(nobody.tls_error, ContainsRegex("alert (certificate required|handshake failure)"));
  }
}

// Every user sees every job: bob lists alice's job and reads its status,
// logs and run, through the CLI and the web endpoint.
TEST_F(OrchestratorDaemonWebTest, EveryUserSeesEveryJob) {
  nlohmann::json jobs = LastJson(fed().User("jobs --json", "bob").out);
  ASSERT_EQ(jobs["jobs"].size(), 1u) << jobs;
  EXPECT_EQ(jobs["jobs"][0]["id"], "job-1");
  EXPECT_EQ(jobs["jobs"][0]["owner"], "alice");
  nlohmann::json status = LastJson(fed().User("status job-1 --json", "bob").out);
  EXPECT_EQ(status["state"], "done") << status;
  EXPECT_EQ(status["owner"], "alice");
  EXPECT_EQ(status["rounds"].size(), 4u);
  EXPECT_THAT(fed().User("logs job-1", "bob").out, HasSubstr("round 4/4 done"));
  nlohmann::json shown = LastJson(fed().User("runs show job-1 --json", "bob").out);
  EXPECT_EQ(shown["owner"], "alice") << shown;
  EXPECT_EQ(shown["rounds"].size(), 4u);
  auto runs = Client("bob")->Get("/api/runs");
  ASSERT_TRUE(runs) << httplib::to_string(runs.error());
  ASSERT_EQ(runs->status, 200) << runs->body;
  nlohmann::json list = nlohmann::json::parse(runs->body);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["job_id"], "job-1");
  EXPECT_EQ(list[0]["owner"], "alice");
}

// An MLflow run ends as its job did: KILLED when aborted, FAILED when the job
// failed. The orchestrator's own credentials (its environment, as MLflow's
// clients read it) go with every call; the user's job carries none.
TEST(OrchestratorDaemonTest, MlflowRunsEndAsTheirJobsEndedWithTheOperatorsCredentials) {
  testing_util::FakeMlflow mlflow;
  Federation fed("mlflow-ends");
  ::setenv("MLFLOW_TRACKING_TOKEN", "operator-token", 1);
  const bool started = fed.StartOrchestrator(0, {"--mlflow-allow", mlflow.uri()});
  ::unsetenv("MLFLOW_TRACKING_TOKEN");
  ASSERT_TRUE(started) << Read(fed.dir() + "/orchestrator.log");
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  const std::string job = fed.WriteJob(
      "job", std::string(kJob) + "tracking: {mlflow: {uri: '" + mlflow.uri() + "'}}\n");

  ASSERT_EQ(fed.User("submit " + job + " --set training.rounds=100000").status, 0);
  ASSERT_TRUE(WaitUntil([&] { return fed.Status("job-1")["rounds_completed"].get<int>() >= 1; },
                        kEventCeiling, 50ms));
  ASSERT_EQ(fed.User("abort job-1").status, 0);
  EXPECT_TRUE(WaitUntil([&] { return mlflow.RunOfJob("job-1").status == "KILLED"; }))
      << mlflow.RunOfJob("job-1").status;
  EXPECT_TRUE(mlflow.RunOfJob("job-1").ended);

  // Rounds that cannot finish in time (a second's timeout for many epochs),
  // with no retry: the job fails.
  ASSERT_EQ(fed.User("submit " + job +
                     " --set model.name=mlp --set training.local_epochs=2000"
                     " --set federation.round_timeout=1 --set federation.round_retries=0")
                .status,
            0);
  EXPECT_EQ(fed.User("status job-2 --wait").status, 1);
  EXPECT_TRUE(WaitUntil([&] { return mlflow.RunOfJob("job-2").status == "FAILED"; }))
      << mlflow.RunOfJob("job-2").status;
  EXPECT_EQ(mlflow.authorizations(), std::set<std::string>{"Bearer operator-token"});
}

// Jobs run one at a time, oldest first. The silos are held (SIGSTOP) while
// the jobs are submitted, so that the first is still running when the
// others arrive, however fast or slow the machine.
TEST(OrchestratorDaemonTest, QueuedJobsRunOneAtATimeOldestFirst) {
  Federation fed("queue");
  ASSERT_TRUE(fed.StartOrchestrator());
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  ASSERT_TRUE(fed.WaitConnected({"a", "b", "c"}));
  for (const char* s : {"a", "b", "c"}) fed.Signal(s, SIGSTOP);
  const std::string job = fed.WriteJob("job", kJob);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(fed.User("submit " + job).status, 0);
  ASSERT_TRUE(
      WaitUntil([&] { return fed.Status("job-1")["state"] == "running"; }, kEventCeiling, 50ms));
  EXPECT_EQ(fed.Status("job-2")["state"], "queued");
  EXPECT_EQ(fed.Status("job-3")["state"], "queued");
  for (const char* s : {"a", "b", "c"}) fed.Signal(s, SIGCONT);

  ASSERT_EQ(fed.User("status job-3 --wait").status, 0);
  std::vector<nlohmann::json> jobs;
  for (const char* id : {"job-1", "job-2", "job-3"}) {
    jobs.push_back(fed.Status(id));
    EXPECT_EQ(jobs.back()["state"], "done") << id;
  }
  for (int i = 1; i < 3; ++i) {
    EXPECT_GE(jobs[i]["started"].get<double>(), jobs[i - 1]["finished"].get<double>())
        << "job-" << i + 1 << " started before job-" << i << " ended";
  }
}

TEST(OrchestratorDaemonTest, AbortStopsARunningJobAndOnlyItsOwnerMay) {
  Federation fed("abort");
  ASSERT_TRUE(fed.StartOrchestrator());
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  const std::string job = fed.WriteJob("job", kJob);
  ASSERT_EQ(fed.User("submit " + job + " --set training.rounds=100000").status, 0);
  ASSERT_TRUE(WaitUntil([&] { return fed.Status("job-1")["rounds_completed"].get<int>() >= 1; },
                        kEventCeiling, 50ms));
  Output by_bob = fed.User("abort job-1", "bob");
  EXPECT_EQ(by_bob.status, 1);
  EXPECT_THAT(by_bob.err, HasSubstr("belongs to 'alice'"));

  Output by_alice = fed.User("abort job-1 --reason 'wrong learning rate'");
  ASSERT_EQ(by_alice.status, 0) << by_alice.err;
  nlohmann::json status;
  WaitUntil(
      [&] {
        status = fed.Status("job-1");
        return status["state"] != "running";
      },
      kEventCeiling, 50ms);
  EXPECT_EQ(status["state"], "aborted");
  EXPECT_THAT(status["error"].get<std::string>(),
              HasSubstr("aborted by alice: wrong learning rate"));
  EXPECT_LT(status["rounds_completed"].get<int>(), 100000);

  Output again = fed.User("abort job-1");
  EXPECT_EQ(again.status, 1);
  EXPECT_THAT(again.err, HasSubstr("already finished"));
  Output download = fed.User("download job-1 --out " + fed.dir() + "/m.fsm");
  EXPECT_NE(download.status, 0);
  EXPECT_THAT(download.err, HasSubstr("a final model exists once it is done"));
  EXPECT_FALSE(fs::exists(fed.dir() + "/m.fsm"));

  // The next job still runs on the same silos.
  ASSERT_EQ(fed.User("submit " + job + " --set training.rounds=2").status, 0);
  EXPECT_EQ(fed.User("status job-2 --wait").status, 0);

  // Its model is alice's: bob may not take it, unless the operator makes
  // him one of the federation's leads.
  Output taken = fed.User("download job-2 --out " + fed.dir() + "/bob.fsm", "bob");
  EXPECT_NE(taken.status, 0);
  EXPECT_THAT(taken.err, HasSubstr("job job-2's models belong to 'alice', who submitted it; "
                                   "'bob' may not take them"));
  EXPECT_FALSE(fs::exists(fed.dir() + "/bob.fsm"));
  EXPECT_THAT(Read(fed.dir() + "/orchestrator.log"),
              HasSubstr("refused DownloadModel of job 'job-2' to 'bob'"));
  EXPECT_EQ(fed.User("download job-2 --out " + fed.dir() + "/alice.fsm").status, 0);
  fed.Kill("orchestrator", SIGTERM);
  ASSERT_TRUE(fed.StartOrchestrator(0, {"--lead", "bob"}));
  Output lead = fed.User("download job-2 --out " + fed.dir() + "/bob.fsm", "bob");
  EXPECT_EQ(lead.status, 0) << lead.err;
  EXPECT_EQ(Read(fed.dir() + "/bob.fsm"), Read(fed.dir() + "/alice.fsm"));
}

// Everything under `dir` (files, recursively) as one string.
std::string AllBytesUnder(const std::string& dir) {
  std::string all;
  for (const auto& f : fs::recursive_directory_iterator(dir)) {
    if (f.is_regular_file()) all += Read(f.path().string());
  }
  return all;
}

// A silo's bad cells are named by row and column only: the cell's value and
// the file's path stay in the silo's own log, and reach neither the
// orchestrator's log, its store, nor any user.
TEST(OrchestratorDaemonTest, ABadCellsValueNeverLeavesTheSilo) {
  Federation fed("leak");
  const std::string data = std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/fraud/data/";
  fs::copy_file(data + "east.csv", fed.dir() + "/a.csv");
  for (const auto& [silo, row] : std::vector<std::pair<std::string, std::string>>{
           {"b", "12.5,3,SECRET-MERCHANT-7731,4.0,100,1,2,0"},
           {"c", "SECRET-AMOUNT-4242,3,grocery,4.0,100,1,2,0"}}) {
    std::string text = Read(data + (silo == "b" ? "west.csv" : "south.csv"));
    text.insert(text.find('\n', text.find('\n') + 1) + 1, row + "\n");  // data row 2
    std::ofstream(fed.dir() + "/" + silo + ".csv") << text;
  }
  std::ofstream(fed.dir() + "/datasets.yaml")
      << "datasets:\n  transactions: {csv: '{silo}.csv', label: is_fraud, "
         "categorical: [merchant], missing: impute}\n";
  ASSERT_TRUE(fed.StartOrchestrator());
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  const std::string job = fed.WriteJob(
      "fraud",
      "name: fraud\ndata: {dataset: transactions}\npreprocess:\n  scale: standard\n"
      "  categories:\n    merchant: [grocery, restaurant, online, travel, atm, electronics]\n"
      "model: {name: mlp, hidden: [8]}\ntraining: {rounds: 2}\n"
      "federation: {silos: [a, b, c], min_silos: 3, wait_for_silos: 180}\n");
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  Output waited = fed.User("status job-1 --wait");
  EXPECT_EQ(waited.status, 1);
  const std::string logs = fed.User("logs job-1").out;
  EXPECT_THAT(logs, HasSubstr("silo 'b': dataset 'transactions': column 'merchant': a value "
                              "outside the job's vocabulary (preprocess.categories.merchant)"));
  EXPECT_THAT(logs, HasSubstr("silo 'c': dataset 'transactions': row 2, column 'amount': not a "
                              "number"));
  // What every user and the orchestrator's operator can see.
  const std::string outside = logs + waited.out + waited.err + fed.User("status job-1 --json").out +
                              fed.User("runs show job-1 --json").out +
                              Read(fed.dir() + "/orchestrator.log") +
                              AllBytesUnder(fed.dir() + "/state");
  for (const char* secret : {"SECRET-MERCHANT-7731", "SECRET-AMOUNT-4242", "b.csv", "c.csv"}) {
    EXPECT_THAT(outside, Not(HasSubstr(secret))) << secret;
  }
  // The silos' own logs have it all, for their operators.
  EXPECT_THAT(Read(fed.dir() + "/b.log"), HasSubstr("SECRET-MERCHANT-7731"));
  EXPECT_THAT(Read(fed.dir() + "/c.log"), HasSubstr("c.csv:3: 'SECRET-AMOUNT-4242'"));
}

// Silos send their audit log's signed head to the orchestrator (at connect,
// every N entries, at each job's end), which keeps it where the silo's
// operator cannot take it back. A log cut back afterwards fails against the
// anchors; an anchor edited at the orchestrator fails its signature; a silo
// restarted with its log cut back (and its ledger removed, so it starts at
// all) is reported by the orchestrator.
TEST(OrchestratorDaemonTest, SilosAnchorTheirAuditLogsAtTheOrchestrator) {
  Federation fed("anchors");
  ASSERT_TRUE(fed.StartOrchestrator());
  const std::string ring = fed.dir() + "/secrets/storage-keys.yaml";
  ASSERT_EQ(fed.Run("keys new " + ring).status, 0);
  for (const char* s : {"a", "b", "c"}) {
    fed.StartSilo(s, {"--storage-keys", ring, "--audit-anchor-every", "5"});
  }
  const std::string job = fed.WriteJob("job", kJob);
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err;

  // The job's end asks for heads; they come a moment later. Kept: during the
  // job (every 5 entries) and at its end (at connect the logs were empty).
  const std::string anchors = fed.dir() + "/state/audit-anchors/a.jsonl";
  const std::string log = fed.dir() + "/kits/a/state/audit.log";
  const std::string keys = " --storage-keys " + ring;
  const std::string verify = "audit verify " + log + " --anchors " + anchors + " --ca " +
                             fed.dir() + "/kits/a/ca.crt" + keys + " --json";
  nlohmann::json verified;
  WaitUntil(
      [&] {
        Output v = fed.Run(verify);
        if (v.status == 0) verified = LastJson(v.out);
        return verified.is_object() && verified["latest_anchor"]["entries"] == verified["entries"];
      },
      kEventCeiling, 100ms);
  ASSERT_TRUE(verified.is_object()) << Read(anchors);
  EXPECT_EQ(verified["latest_anchor"]["entries"], verified["entries"])
      << "the job's end was not anchored";
  EXPECT_GE(verified["anchors"].get<int>(), 2);
  EXPECT_EQ(verified["signed_by"], "a");
  EXPECT_TRUE(verified["anchored"].get<bool>());
  EXPECT_TRUE(verified["keyed"].get<bool>());
  // The orchestrator's own chain records them too.
  EXPECT_THAT(Read(fed.dir() + "/state/audit.log"), HasSubstr("\"silo_audit_head\""));

  // Signatures are not optional, and an anchor edited where it is kept proves
  // nothing.
  Output no_ca = fed.Run("audit verify " + log + " --anchors " + anchors + keys);
  EXPECT_EQ(no_ca.status, 2);
  EXPECT_THAT(no_ca.err, HasSubstr("--anchors needs --ca"));
  const std::string kept = Read(anchors);
  std::vector<std::string> lines = absl::StrSplit(kept, '\n', absl::SkipEmpty());
  nlohmann::json edited = nlohmann::json::parse(lines.back());
  edited["entries"] = edited["entries"].get<int64_t>() + 1000;
  lines.back() = edited.dump();
  std::ofstream(anchors, std::ios::trunc) << absl::StrJoin(lines, "\n") << "\n";
  Output forged = fed.Run(verify);
  EXPECT_NE(forged.status, 0);
  EXPECT_THAT(forged.err, HasSubstr("a.jsonl:" + std::to_string(lines.size()) +
                                    ": this anchor's signature does not verify"));
  std::ofstream(anchors, std::ios::trunc) << kept;
  // Another silo's anchors are not this log's.
  Output other =
      fed.Run("audit verify " + log + " --anchors " + fed.dir() +
              "/state/audit-anchors/b.jsonl --ca " + fed.dir() + "/kits/a/ca.crt" + keys);
  EXPECT_EQ(other.status, 2);
  EXPECT_THAT(other.err, HasSubstr("these anchors are silo 'b''s, but"));

  // The attack: silo a's operator cuts its log back to the first entry (a
  // valid, shorter keyed chain) and removes its ledger, which would refuse
  // the cut log.
  fed.Kill("a", SIGTERM);
  const std::string full = Read(log);
  std::vector<std::string> entries = absl::StrSplit(full, '\n', absl::SkipEmpty());
  ASSERT_GT(entries.size(), 5u);
  std::ofstream(log, std::ios::binary | std::ios::trunc) << entries[0] << "\n";
  ASSERT_TRUE(fs::remove(fed.dir() + "/kits/a/state/privacy-ledger.json"));
  EXPECT_EQ(fed.Run("audit verify " + log + keys).status, 0) << "a valid chain on its own";
  Output cut = fed.Run(verify);
  EXPECT_EQ(cut.status, 2);
  EXPECT_THAT(cut.err, HasSubstr("ends at entry 1, but the anchor records entry"));
  EXPECT_THAT(cut.err, HasSubstr("entries were cut off the end"));
  // Started again, its first head is behind what the orchestrator kept.
  fed.StartSilo("a", {"--storage-keys", ring});
  WaitForText(fed.dir() + "/orchestrator.log", "silo 'a': its audit log went back");
  EXPECT_THAT(Read(fed.dir() + "/orchestrator.log"),
              HasSubstr("silo 'a': its audit log went back (entry 1 now"));
  EXPECT_THAT(Read(fed.dir() + "/state/audit.log"), HasSubstr("silo_audit_head_regressed"));
}

// The steps a silo's ledger (its text) holds for a run (-1 before it is
// admitted).
int64_t LedgerSteps(const std::string& ledger_text, const std::string& run) {
  nlohmann::json j = nlohmann::json::parse(ledger_text, nullptr, false);
  if (j.is_discarded() || !j.contains("entries")) return -1;
  for (const auto& e : j["entries"]) {
    if (e["run_id"] == run && e["dp"].is_object()) return e["dp"]["steps"].get<int64_t>();
  }
  return -1;
}

// A silo killed in the middle of a DP job and started again continues its
// ledger: the steps charged to the run never go down, and the run's whole
// plan stays reserved, so a second job that would take the dataset past its
// budget is refused.
// The plaintext of a (sealed) ledger, opened with the ring at `ring_path`;
// "" when it does not open (not written yet, or mid-write).
std::string OpenLedger(const std::string& bytes, const std::string& ring_path) {
  StatusOr<secure::KeyRing> ring = secure::LoadKeyRing(ring_path);
  if (!ring.ok() || bytes.empty()) return "";
  if (!IsSealed(bytes)) return bytes;
  StatusOr<std::string> plain =
      secure::AeadFileSealer(*ring).Open(bytes, "privacy-ledger.json", "ledger");
  return plain.ok() ? *plain : "";
}

TEST(OrchestratorDaemonTest, ARestartedSiloContinuesItsLedgerAndTheBudgetHolds) {
  Federation fed("ledger");
  ASSERT_TRUE(fed.StartOrchestrator());
  std::ofstream(fed.dir() + "/policy.yaml")
      << "datasets:\n  digits: {max_epsilon: 5, require_local_dp: true}\n";
  // The silos' state is sealed.
  const std::string ring = fed.dir() + "/secrets/storage-keys.yaml";
  ASSERT_EQ(fed.Run("keys new " + ring).status, 0);
  const std::vector<std::string> policy = {"--policy", fed.dir() + "/policy.yaml", "--storage-keys",
                                           ring};
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s, policy);
  const std::string job =
      fed.WriteJob("dp",
                   "name: dp\ndata: {dataset: digits}\nmodel: {name: logistic}\n"
                   "training: {rounds: 40, local_epochs: 2, batch_size: 16, learning_rate: 0.1}\n"
                   "privacy: {dp: {mode: local, target_epsilon: 4}}\n"
                   "federation: {silos: [a, b, c], min_silos: 2, wait_for_silos: 180}\n");
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  // Wait for a round charged to silo a's ledger, then kill a mid-job.
  const std::string ledger = fed.dir() + "/kits/a/state/privacy-ledger.json";
  std::string run;
  int64_t before = -1;
  WaitUntil(
      [&] {
        nlohmann::json j = nlohmann::json::parse(OpenLedger(Read(ledger), ring), nullptr, false);
        if (j.is_discarded() || j["entries"].empty()) return false;
        run = j["entries"][0]["run_id"];
        before = LedgerSteps(j.dump(), run);
        return before > 0;
      },
      kEventCeiling, 5ms);
  ASSERT_GT(before, 0) << Read(fed.dir() + "/a.log");
  EXPECT_EQ(Read(ledger).substr(0, 5), "FSEAL");
  fed.Kill("a", SIGKILL);
  const int64_t at_kill = LedgerSteps(OpenLedger(Read(ledger), ring), run);
  ASSERT_GE(at_kill, before);
  fed.StartSilo("a", policy);
  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err;
  // The restarted silo went on from the ledger: never fewer steps, one entry.
  const nlohmann::json after = nlohmann::json::parse(OpenLedger(Read(ledger), ring));
  ASSERT_EQ(after["entries"].size(), 1u);
  ASSERT_LT(at_kill, after["entries"][0]["dp"]["planned_steps"].get<int64_t>());  // mid-job
  EXPECT_GE(after["entries"][0]["dp"]["steps"].get<int64_t>(), at_kill);
  EXPECT_LE(after["entries"][0]["dp"]["steps"], after["entries"][0]["dp"]["planned_steps"]);
  EXPECT_LE(after["entries"][0]["epsilon"].get<double>(), 4.0);
  EXPECT_THAT(Read(fed.dir() + "/a.log"), Not(HasSubstr("budget")));

  // A second job of epsilon 4 would take each silo's dataset past 5, with
  // the first run's plan reserved: every silo refuses it, and says why.
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  Output refused = fed.User("status job-2 --wait");
  EXPECT_EQ(refused.status, 1);
  EXPECT_THAT(fed.User("logs job-2").out, HasSubstr("past the budget (max_epsilon)"));
  EXPECT_EQ(nlohmann::json::parse(OpenLedger(Read(ledger), ring))["entries"].size(), 1u);
  // Both audit trails say so. The orchestrator's: each silo dropped from
  // round 1 with its reason, then the round failed with the reasons.
  const std::string refused_run = fed.Status("job-2")["run_id"];
  const std::vector<nlohmann::json> trail = AuditEntries(fed.dir() + "/state/audit.log");
  std::set<std::string> dropped;
  for (const auto& e : EntriesOf(trail, "silo_dropped")) {
    if (e["data"]["round"] == "1" &&
        e["data"].value("reason", "").find("past the budget (max_epsilon)") != std::string::npos) {
      dropped.insert(e["data"]["silo"].get<std::string>());
    }
  }
  EXPECT_EQ(dropped, (std::set<std::string>{"a", "b", "c"}));
  const std::vector<nlohmann::json> failed = EntriesOf(trail, "round_failed");
  EXPECT_FALSE(failed.empty());
  if (!failed.empty()) {
    EXPECT_EQ(failed.back()["data"]["round"], "1");
    EXPECT_THAT(failed.back()["data"].value("reason", ""),
                HasSubstr("past the budget (max_epsilon)"));
  }
  // Each silo's own (sealed): it refused that job's round 1, and why.
  for (const std::string silo : {"a", "b", "c"}) {
    const std::vector<nlohmann::json> refusals =
        EntriesOf(AuditEntries(fed.dir() + "/kits/" + silo + "/state/audit.log", ring), "refused");
    EXPECT_FALSE(refusals.empty()) << silo;
    if (refusals.empty()) continue;
    EXPECT_EQ(refusals.back()["data"]["job"], refused_run) << silo;
    EXPECT_EQ(refusals.back()["data"]["round"], "1") << silo;
    EXPECT_THAT(refusals.back()["data"].value("reason", ""),
                HasSubstr("past the budget (max_epsilon)"))
        << silo;
  }

  // The attack: an older sealed copy of the ledger put back, to "refill" the
  // budget. It still opens (same key, same name), but its generation is
  // older than the last save the audit log recorded: the silo refuses to run.
  const std::string older_copy = Read(ledger);
  const std::string small_job =
      fed.WriteJob("small",
                   "name: small\ndata: {dataset: digits}\nmodel: {name: logistic}\n"
                   "training: {rounds: 2, local_epochs: 1, batch_size: 16, learning_rate: 0.1}\n"
                   "privacy: {dp: {mode: local, target_epsilon: 0.3}}\n"
                   "federation: {silos: [a, b, c], min_silos: 3, wait_for_silos: 180}\n");
  ASSERT_EQ(fed.User("submit " + small_job).status, 0);
  Output small = fed.User("status job-3 --wait");
  ASSERT_EQ(small.status, 0) << small.out << small.err << fed.User("logs job-3").out;
  fed.Kill("a", SIGTERM);
  const std::string newest = Read(ledger);
  const int64_t older_generation =
      nlohmann::json::parse(OpenLedger(older_copy, ring))["generation"].get<int64_t>();
  ASSERT_GT(nlohmann::json::parse(OpenLedger(newest, ring))["generation"].get<int64_t>(),
            older_generation);
  std::ofstream(ledger, std::ios::binary | std::ios::trunc) << older_copy;
  // Starts silo a (against no orchestrator) and returns its exit status, or
  // -1 if it was still running after a minute: it should refuse at once.
  auto start_refused = [&](const std::string& log) {
    std::vector<std::string> args = {"fedsilo",        "silo",
                                     "--kit",          fed.dir() + "/kits/a",
                                     "--datasets",     fed.dir() + "/datasets.yaml",
                                     "--orchestrator", "localhost:1"};
    args.insert(args.end(), policy.begin(), policy.end());
    auto pid = SpawnProcess(Binary(), args, log);
    if (!pid.ok()) return -1;
    int status = -1;
    WaitUntil([&] { return waitpid(*pid, &status, WNOHANG) != 0; }, kEventCeiling, 100ms);
    if (!WIFEXITED(status)) {
      StopProcess(*pid, SIGKILL, 0ms);
      return -1;
    }
    return WEXITSTATUS(status);
  };
  EXPECT_EQ(start_refused(fed.dir() + "/a-rolled-back.log"), 2)
      << "the silo ran on a rolled-back ledger";
  EXPECT_THAT(Read(fed.dir() + "/a-rolled-back.log"), HasSubstr("an older copy was put back"));
  // Nothing was written over it: the operator can still restore the newest.
  EXPECT_EQ(Read(ledger), older_copy);
  std::ofstream(ledger, std::ios::binary | std::ios::trunc) << newest;

  // The other way round: the newest ledger, but the audit log that would
  // expose an older one removed (or cut back): refused too.
  const std::string audit_log = fed.dir() + "/kits/a/state/audit.log";
  const std::string log_bytes = Read(audit_log);
  ASSERT_TRUE(std::filesystem::remove(audit_log));
  EXPECT_EQ(start_refused(fed.dir() + "/a-no-log.log"), 2) << "the silo ran without its log";
  EXPECT_THAT(Read(fed.dir() + "/a-no-log.log"), HasSubstr("the log was cut back or removed"));
  std::vector<std::string> entries = absl::StrSplit(log_bytes, '\n', absl::SkipEmpty());
  ASSERT_GT(entries.size(), 3u);
  entries.resize(3);  // the first three entries kept: a valid, shorter chain
  std::ofstream(audit_log, std::ios::binary | std::ios::trunc)
      << absl::StrJoin(entries, "\n") << "\n";
  EXPECT_EQ(start_refused(fed.dir() + "/a-cut-log.log"), 2) << "the silo ran on a cut log";
  EXPECT_THAT(Read(fed.dir() + "/a-cut-log.log"), HasSubstr("the log was cut back or removed"));
  std::ofstream(audit_log, std::ios::binary | std::ios::trunc) << log_bytes;
  EXPECT_EQ(fed.Run("silo ledger --kit " + fed.dir() + "/kits/a --storage-keys " + ring).status, 0);
}

TEST(OrchestratorDaemonTest, JobWaitsForMissingSilosThenFailsNamingThem) {
  Federation fed("missing");
  ASSERT_TRUE(fed.StartOrchestrator());
  fed.StartSilo("a");
  ASSERT_TRUE(fed.WaitConnected({"a"}));  // b and c never start
  const std::string job =
      fed.WriteJob("job",
                   "data: {dataset: digits}\nmodel: {name: logistic}\ntraining: {rounds: 2}\n"
                   "federation: {silos: [a, b, c], min_silos: 2, wait_for_silos: 6}\n");
  ASSERT_EQ(fed.User("submit " + job).status, 0);
  Output waited = fed.User("status job-1 --wait");
  EXPECT_EQ(waited.status, 1);
  EXPECT_THAT(waited.err, HasSubstr("silos did not connect within 6 s"));
  EXPECT_THAT(waited.err, HasSubstr(": b, c;"));
  EXPECT_THAT(fed.User("logs job-1").out, HasSubstr("waiting for 2 of 3 silos to connect: b, c"));

  // With min_silos met, the job starts without the missing one and says so.
  ASSERT_EQ(fed.User("submit " + job + " --set federation.silos=[a,b] --set federation.min_silos=1")
                .status,
            0);
  EXPECT_EQ(fed.User("status job-2 --wait").status, 0);
  EXPECT_THAT(fed.User("logs job-2").out, HasSubstr("starting without b"));
}

// Users' mistakes and wrong kits against a running orchestrator (no silos, no
// --mlflow-allow): each is refused at once with an error that says what is
// wrong, and nothing is run or written.
class OrchestratorDaemonBadInputTest : public SharedFederationTest<OrchestratorDaemonBadInputTest> {
 public:
  static constexpr char kName[] = "bad";
  static std::string Start(Federation& fed) {
    if (!fed.StartOrchestrator()) return Read(fed.dir() + "/orchestrator.log");
    job_ = fed.WriteJob("bad", kJob);
    return "";
  }

 protected:
  static inline std::string job_;
};

TEST_F(OrchestratorDaemonBadInputTest, AValueOutOfRangeIsRefusedAtSubmitNamingTheKey) {
  Output invalid = fed().User("submit " + job_ + " --set training.rounds=-1");
  EXPECT_EQ(invalid.status, 2);
  EXPECT_THAT(invalid.err, HasSubstr("training.rounds"));
}

TEST_F(OrchestratorDaemonBadInputTest, AModuleThatDoesNotFitTheDataIsRefusedAtSubmit) {
  Output script = fed().User("submit " + job_ + " --set data.dataset=breast_cancer" +
                             " --set model.torchscript=" + std::string(FEDSILO_TEST_SOURCE_DIR) +
                             "/examples/torchscript/digits_net.pt");
  EXPECT_EQ(script.status, 2);
  EXPECT_THAT(script.err, HasSubstr("forward() fails on a batch of shape [2, 30]"));
}

// A module that copies a file into a buffer is refused by name at submit.
TEST_F(OrchestratorDaemonBadInputTest, AModuleThatReadsAFileIsRefusedAtSubmitNamingTheOp) {
  const std::string secret = fed().dir() + "/secret.txt";
  std::ofstream(secret) << std::string(64, 'S');
  ml::ScriptedModule thief;
  thief.parameters = {{"w", {64, 10}}, {"b", {10}}};
  thief.buffers = {{"loot", {64}}};
  thief.methods = "def forward(self, x):\n    self.loot = torch.from_file('" + secret +
                  "', False, 64, dtype=0).float()\n    return torch.matmul(x, self.w) + self.b\n";
  ASSERT_TRUE(ml::WriteScriptedModule(thief, fed().dir() + "/thief.pt").ok());
  Output stolen =
      fed().User("submit " + job_ + " --set model.torchscript=" + fed().dir() + "/thief.pt");
  EXPECT_EQ(stolen.status, 2) << stolen.err;
  EXPECT_THAT(stolen.err, HasSubstr("method 'forward' uses aten::from_file"));
}

// A module that writes a file when it is loaded: refused by name at submit,
// and the orchestrator -- which loads modules only in sandboxed workers --
// wrote nothing, where it runs or where the module asked.
TEST_F(OrchestratorDaemonBadInputTest, AModuleThatWritesWhenLoadedIsRefusedAndWroteNothing) {
  ml::ScriptedModule writer;
  writer.parameters = {{"w", {64, 10}}};
  writer.methods =
      "def forward(self, x):\n    return torch.matmul(x, self.w)\n"
      "def __getstate__(self):\n    return (self.w, self.training)\n"
      "def __setstate__(self, state: Tuple[Tensor, bool]):\n"
      "    torch.save(state[0], '" +
      fed().dir() +
      "/pwned.pt')\n"
      "    torch.save(state[0], 'pwned-by-a-module.pt')\n"
      "    self.w = state[0]\n    self.training = state[1]\n";
  ASSERT_TRUE(ml::WriteScriptedModule(writer, fed().dir() + "/writer.pt").ok());
  Output wrote =
      fed().User("submit " + job_ + " --set model.torchscript=" + fed().dir() + "/writer.pt");
  EXPECT_EQ(wrote.status, 2) << wrote.err;
  EXPECT_THAT(wrote.err, HasSubstr("method '__setstate__' uses aten::save"));
  EXPECT_FALSE(fs::exists(fed().dir() + "/pwned.pt"));
  EXPECT_FALSE(fs::exists("pwned-by-a-module.pt"));  // the orchestrator's working folder
}

// Without --mlflow-allow a job naming a tracking server is refused at
// submit, and the server hears nothing: no run, no request of any kind.
TEST_F(OrchestratorDaemonBadInputTest, AJobNamingAnMlflowServerIsRefusedWhenNoneIsAllowed) {
  testing_util::FakeMlflow mlflow;
  const std::string job = fed().WriteJob(
      "mlflow", std::string(kJob) + "tracking: {mlflow: {uri: '" + mlflow.uri() + "'}}\n");
  Output refused = fed().User("submit " + job);
  EXPECT_EQ(refused.status, 2) << refused.out;
  EXPECT_THAT(refused.err, HasSubstr("tracking.mlflow.uri: '" + mlflow.uri() +
                                     "' is not a tracking server this orchestrator exports to "
                                     "(its operator allows none; --mlflow-allow)"));
  EXPECT_EQ(fed().User("jobs --json").out.find(mlflow.uri()), std::string::npos);
  EXPECT_TRUE(mlflow.runs().empty());
  EXPECT_TRUE(mlflow.authorizations().empty()) << "the server was called";
}

TEST_F(OrchestratorDaemonBadInputTest, AnUnknownJobIsNamed) {
  Output unknown = fed().User("status job-42");
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, HasSubstr("no job 'job-42'"));
}

TEST_F(OrchestratorDaemonBadInputTest, ASiloKitIsToldTheCommandNeedsAUserKit) {
  Output silo_kit = fed().User("jobs", "a");
  EXPECT_EQ(silo_kit.status, 2);
  EXPECT_THAT(silo_kit.err, HasSubstr("need a user kit"));
}

TEST_F(OrchestratorDaemonBadInputTest, AnUnreachableOrchestratorIsNamedByItsAddress) {
  Output unreachable =
      fed().Run("jobs --kit " + fed().dir() + "/kits/alice --orchestrator localhost:1");
  EXPECT_EQ(unreachable.status, 1);
  EXPECT_THAT(unreachable.err, HasSubstr("cannot reach the orchestrator at localhost:1"));
}

TEST_F(OrchestratorDaemonBadInputTest, ASecondOrchestratorCannotShareTheStateFolder) {
  Output second =
      fed().Run("orchestrator --kit " + fed().dir() + "/kits/orchestrator --state-dir " +
                fed().dir() + "/state --listen 127.0.0.1:0");
  EXPECT_EQ(second.status, 1);
  EXPECT_THAT(second.err, HasSubstr("in use by another orchestrator"));
}

// The job API checks the certificate itself: a silo's certificate is
// refused even by a client that skips the CLI's own check.
TEST_F(OrchestratorDaemonBadInputTest, TheJobApiRefusesASiloCertificateItself) {
  auto kit = secure::LoadKit(fed().dir() + "/kits/a");
  ASSERT_TRUE(kit.ok());
  auto files = transport::LoadTlsFiles(*kit);
  auto stub = fedsilo::v1::Jobs::NewStub(grpc::CreateChannel(
      "localhost:" + std::to_string(fed().port()), transport::MakeChannelCredentials(*files)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  fedsilo::v1::ListJobsReply reply;
  grpc::Status refused = stub->ListJobs(&context, {}, &reply);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(refused.error_message(), HasSubstr("holds a silo certificate"));
  EXPECT_THAT(OrchestratorLog(), HasSubstr("refused ListJobs"));
}

// `--state-dir` defaults to <kit>/state: an orchestrator started without it
// keeps its endpoint, store and audit log there, and serves from there.
TEST(OrchestratorDaemonTest, WithoutStateDirTheStateIsKeptInTheKitsStateFolder) {
  Federation fed("default-state");
  const std::string kit = fed.dir() + "/kits/orchestrator";
  auto pid =
      SpawnProcess(Binary(), {"fedsilo", "orchestrator", "--kit", kit, "--listen", "127.0.0.1:0"},
                   fed.dir() + "/orchestrator.log");
  ASSERT_TRUE(pid.ok()) << pid.status();
  bool exited = false;
  absl::Cleanup stop = [&] {
    if (!exited) StopProcess(*pid, SIGTERM, 10s);
  };
  std::string endpoint;
  WaitUntil([&] {
    endpoint = Read(kit + "/state/endpoint");
    exited = waitpid(*pid, nullptr, WNOHANG) != 0;
    return !endpoint.empty() || exited;
  });
  ASSERT_FALSE(endpoint.empty()) << Read(fed.dir() + "/orchestrator.log");
  EXPECT_TRUE(fs::exists(kit + "/state/fedsilo.db"));
  EXPECT_TRUE(fs::exists(kit + "/state/audit.log"));
  EXPECT_THAT(Read(fed.dir() + "/orchestrator.log"), HasSubstr("state  " + kit + "/state"));
  fed.UseOrchestratorAt(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
  Output jobs = fed.User("jobs --json");
  EXPECT_EQ(jobs.status, 0) << jobs.err;
  EXPECT_FALSE(fs::exists(fed.dir() + "/state"));
}

// An orchestrator started with --insecure (and --http): plaintext only with
// --insecure on both ends, and loud about it. Silo a has the flag, silo b
// does not and never gets through; a is connected when the tests start.
class OrchestratorDaemonPlaintextTest
    : public SharedFederationTest<OrchestratorDaemonPlaintextTest> {
 public:
  static constexpr char kName[] = "insecure";
  static std::string Start(Federation& fed) {
    if (!fed.StartOrchestrator(0, {"--insecure", "--http", "127.0.0.1:0"})) {
      return Read(fed.dir() + "/orchestrator.log");
    }
    http_port_ = fed.HttpPort();
    if (http_port_ == 0) return "no http_endpoint: " + Read(fed.dir() + "/orchestrator.log");
    fed.StartSilo("a", {"--insecure"});
    fed.StartSilo("b");  // no flag: never gets through
    if (!fed.WaitConnected({"a"})) return "silo a did not connect";
    return "";
  }

 protected:
  // Submits the job on `silos` (min_silos: all of them) with --insecure and
  // returns its id ("" when refused).
  static std::string Submit(const std::string& silos, int min_silos) {
    const std::string job =
        fed().WriteJob("job",
                       "data: {dataset: digits}\nmodel: {name: logistic}\ntraining: {rounds: 2}\n"
                       "federation: {silos: [a, b], min_silos: 2, wait_for_silos: 6}\n");
    Output submitted = fed().User("submit " + job + " --insecure --set federation.silos=[" + silos +
                                  "] --set federation.min_silos=" + std::to_string(min_silos));
    EXPECT_EQ(submitted.status, 0) << submitted.err;
    // The id is submit's last line (a warning may come before it).
    std::string id = submitted.out;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    id = id.substr(id.rfind('\n') + 1);
    EXPECT_THAT(id, ::testing::MatchesRegex("job-[0-9]+")) << submitted.out;
    return submitted.status == 0 ? id : "";
  }

  static inline int http_port_ = 0;
};

TEST_F(OrchestratorDaemonPlaintextTest, TheStartUpLinesSayNoTlsAndPlaintext) {
  EXPECT_THAT(OrchestratorLog(), HasSubstr("NO TLS"));
  EXPECT_THAT(OrchestratorLog(), HasSubstr("PLAINTEXT, --insecure"));
}

// Without the flag, a client speaks TLS and cannot talk to a plaintext
// server, and says so.
TEST_F(OrchestratorDaemonPlaintextTest, AClientWithoutInsecureIsToldTheServerDoesNotSpeakTls) {
  Output tls = fed().User("jobs");
  EXPECT_EQ(tls.status, 2);
  EXPECT_THAT(tls.err, HasSubstr("does not speak TLS (was it started with --insecure?)"));
}

// ... and the other way round: a plaintext client reaches no TLS-only port.
TEST_F(OrchestratorDaemonPlaintextTest, APlaintextClientNamesTheAddressItCannotReach) {
  Output plain =
      fed().Run("jobs --insecure --kit " + fed().dir() + "/kits/alice --orchestrator 127.0.0.1:1");
  EXPECT_EQ(plain.status, 1);
  EXPECT_THAT(plain.err, HasSubstr("cannot reach 127.0.0.1:1"));
}

TEST_F(OrchestratorDaemonPlaintextTest, ASiloWithoutInsecureNeverConnectsAndItsJobFailsNamingIt) {
  const std::string id = Submit("a,b", 2);
  ASSERT_NE(id, "");
  Output failed = fed().User("status " + id + " --wait --insecure");
  EXPECT_EQ(failed.status, 1);
  EXPECT_THAT(failed.err, HasSubstr("(federation.wait_for_silos): b;"));
  EXPECT_THAT(Read(fed().dir() + "/a.log"), HasSubstr("NO TLS"));
}

TEST_F(OrchestratorDaemonPlaintextTest, AJobOnThePlaintextSiloRunsToTheEnd) {
  const std::string id = Submit("a", 1);
  ASSERT_NE(id, "");
  EXPECT_EQ(fed().User("status " + id + " --wait --insecure").status, 0);
}

// The web endpoint is plain HTTP without any check, like the rest: a client
// with no TLS and no certificate reads the runs and the metrics.
TEST_F(OrchestratorDaemonPlaintextTest, TheWebEndpointIsPlainHttpForAnyone) {
  EXPECT_THAT(OrchestratorLog(), HasSubstr("web    http://"));
  EXPECT_THAT(OrchestratorLog(), HasSubstr("PLAINTEXT, no login"));
  httplib::Client plain("127.0.0.1", http_port_);
  plain.set_connection_timeout(5);
  auto runs = plain.Get("/api/runs");
  ASSERT_TRUE(runs) << httplib::to_string(runs.error());
  EXPECT_EQ(runs->status, 200) << runs->body;
  EXPECT_TRUE(nlohmann::json::parse(runs->body, nullptr, false).is_array()) << runs->body;
  auto metrics = plain.Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("fedsilo_silos_connected"));
}

// Every way a connection is refused says why, in words, and stops rather than
// retrying forever; gRPC's and OpenSSL's own lines stay out of the terminal.
// Against a running orchestrator, with the kits of another federation (never
// started; its bob trusts this federation's CA but holds his own
// federation's certificate) and of one whose certificates have expired.
class OrchestratorDaemonRefusalTest : public SharedFederationTest<OrchestratorDaemonRefusalTest> {
 public:
  static constexpr char kName[] = "refusals";
  static std::string Start(Federation& fed) {
    if (!fed.StartOrchestrator()) return Read(fed.dir() + "/orchestrator.log");
    target_ = "localhost:" + std::to_string(fed.port());
    other_ = std::make_unique<Federation>(absl::StrCat(kName, "-other-", ::getpid()));
    fs::copy_file(fed.dir() + "/kits/ca/ca.crt", other_->dir() + "/kits/bob/ca.crt",
                  fs::copy_options::overwrite_existing);
    old_ = fed.dir() + "/old";
    secure::FederationSpec spec;
    spec.name = "old";
    spec.certificate_days = 30;
    spec.participants = {{"a", secure::ParticipantKind::kSilo},
                         {"carol", secure::ParticipantKind::kUser}};
    Status provisioned =
        secure::ProvisionFederation(spec, old_, std::chrono::system_clock::now() - 40 * 24h);
    if (!provisioned.ok()) return std::string(provisioned.message());
    return "";
  }
  static void TearDownTestSuite() {
    const std::string dir = other_ != nullptr ? other_->dir() : "";
    other_.reset();
    const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
    if (!dir.empty() && suite != nullptr && !suite->Failed()) fs::remove_all(dir);
    SharedFederationTest::TearDownTestSuite();
  }

 protected:
  // The federations' names, as their kits' certificates say them.
  static std::string ThisFederation() { return "test-" + std::string(kName) + "-" + Pid(); }
  static std::string OtherFederation() { return "test-" + std::string(kName) + "-other-" + Pid(); }
  static std::string Pid() { return std::to_string(::getpid()); }

  static void ExpectNoGrpcNoise(const std::string& err) {
    EXPECT_THAT(err, Not(HasSubstr("ssl_transport_security")));
    EXPECT_THAT(err, Not(HasSubstr("Handshake failed")));
  }

  static inline std::string target_;
  static inline std::unique_ptr<Federation> other_;
  static inline std::string old_;
};

// A silo with another federation's kit: three identical refusals, then exit 2.
TEST_F(OrchestratorDaemonRefusalTest, ASiloWithAnotherFederationsKitGivesUpNamingBoth) {
  Output silo = fed().Run("silo --kit " + other_->dir() + "/kits/a --datasets " + fed().dir() +
                          "/datasets.yaml --orchestrator " + target_);
  EXPECT_EQ(silo.status, 2) << silo.err;
  EXPECT_THAT(silo.err, HasSubstr("the orchestrator's certificate is not from this kit's CA: it "
                                  "is of federation '" +
                                  ThisFederation() + "', this kit of federation '" +
                                  OtherFederation() + "'"));
  EXPECT_THAT(silo.err, HasSubstr("retrying will not help"));
  ExpectNoGrpcNoise(silo.err);
}

// A user likewise, at once.
TEST_F(OrchestratorDaemonRefusalTest, AUserWithAnotherFederationsKitIsRefusedAtOnce) {
  Output user = fed().Run("jobs --kit " + other_->dir() + "/kits/alice --orchestrator " + target_);
  EXPECT_EQ(user.status, 2);
  EXPECT_THAT(user.err, HasSubstr("is not from this kit's CA"));
  ExpectNoGrpcNoise(user.err);
}

// A kit that trusts this federation's CA but holds another CA's certificate:
// the CLI sees it first.
TEST_F(OrchestratorDaemonRefusalTest, TheCliCatchesAKitWhoseCertificateIsNotFromItsCa) {
  Output mixed = fed().Run("jobs --kit " + other_->dir() + "/kits/bob --orchestrator " + target_);
  EXPECT_EQ(mixed.status, 2);
  EXPECT_THAT(mixed.err, HasSubstr("this kit's certificate is not from the kit's CA (ca.crt)"));
}

// Past the CLI's check (as a client of its own would be), the orchestrator's
// handshake refuses another CA's certificate and logs, with the address it
// came from, what it claimed; after TLS 1.3's handshake, the client hears it.
TEST_F(OrchestratorDaemonRefusalTest, TheHandshakeRefusesAnotherCasCertificateAndLogsItsClaim) {
  auto bob = secure::LoadKit(other_->dir() + "/kits/bob");
  ASSERT_TRUE(bob.ok());
  auto bob_files = transport::LoadTlsFiles(*bob);
  ASSERT_TRUE(bob_files.ok());
  const transport::ConnectionDiagnosis refused =
      transport::DiagnoseConnection(target_, *bob_files, false, 5s);
  EXPECT_EQ(refused.kind, transport::ConnectionDiagnosis::Kind::kCertificate);
  EXPECT_THAT(refused.reason, HasSubstr("the orchestrator refused this kit's certificate"));
  const transport::ConnectionDiagnosis fine = transport::DiagnoseConnection(
      target_, *transport::LoadTlsFiles(*secure::LoadKit(fed().dir() + "/kits/alice")), false, 5s);
  EXPECT_EQ(fine.kind, transport::ConnectionDiagnosis::Kind::kReachable) << fine.reason;
  EXPECT_THAT(OrchestratorLog(),
              ContainsRegex("refused a TLS handshake from (127\\.0\\.0\\.1|\\[::1\\]):[0-9]+, "
                            "'bob' \\(user of federation '" +
                            OtherFederation() + "'"));
  EXPECT_THAT(OrchestratorLog(), HasSubstr("not issued by this federation's CA"));
}

// A client that speaks plaintext to it is refused, logged with its address
// and the reason in words.
TEST_F(OrchestratorDaemonRefusalTest, APlaintextClientIsRefusedAndLoggedWithItsAddress) {
  Output plaintext =
      fed().Run("jobs --insecure --kit " + fed().dir() + "/kits/alice --orchestrator " + target_);
  EXPECT_NE(plaintext.status, 0);
  EXPECT_THAT(OrchestratorLog(),
              ContainsRegex("refused a connection from (127\\.0\\.0\\.1|\\[::1\\]):[0-9]+: it "
                            "does not speak TLS"));
  EXPECT_THAT(OrchestratorLog(), Not(HasSubstr("SSL_ERROR_SSL")));
}

// A revoked user: refused at the handshake once the orchestrator has re-read
// its kit's crl.pem (within seconds). No other test of the suite uses bob.
TEST_F(OrchestratorDaemonRefusalTest, ARevokedUserIsRefusedAtTheHandshake) {
  ASSERT_EQ(fed().User("jobs", "bob").status, 0);  // the control
  ASSERT_EQ(fed().Run("provision revoke bob --out " + fed().dir() + "/kits").status, 0);
  // The orchestrator's calls check the list as soon as it is re-read, and
  // may refuse bob there ("revoked by the federation operator") just before
  // the TLS layer has the new list too; the handshake is what is waited for.
  Output revoked;
  WaitUntil(
      [&] {
        revoked = fed().User("jobs", "bob");
        return revoked.status == 2;
      },
      kEventCeiling, 200ms);
  EXPECT_EQ(revoked.status, 2) << revoked.err;
  EXPECT_THAT(revoked.err, HasSubstr("the orchestrator refused this kit's certificate"));
  EXPECT_THAT(OrchestratorLog(), HasSubstr("revoked by the federation operator"));
  EXPECT_EQ(fed().User("jobs", "alice").status, 0);
}

TEST_F(OrchestratorDaemonRefusalTest, AnExpiredSiloKitIsCaughtBeforeDialling) {
  Output expired = fed().Run("silo --kit " + old_ + "/a --datasets " + fed().dir() +
                             "/datasets.yaml --orchestrator " + target_);
  EXPECT_EQ(expired.status, 2);
  EXPECT_THAT(expired.err, HasSubstr("this kit's certificate expired on"));
}

// An orchestrator likewise, before it makes its state folder or serves.
TEST_F(OrchestratorDaemonRefusalTest, AnExpiredOrchestratorKitIsCaughtBeforeServing) {
  const std::string state = old_ + "/orchestrator-state";
  Output expired = fed().Run("orchestrator --kit " + old_ + "/orchestrator --state-dir " + state +
                             " --listen 127.0.0.1:0");
  EXPECT_EQ(expired.status, 2) << expired.err;
  EXPECT_THAT(expired.err, HasSubstr("orchestrator.crt: this kit's certificate expired on"));
  EXPECT_THAT(expired.err, HasSubstr("ask the federation operator for a new kit"));
  EXPECT_THAT(expired.err, Not(HasSubstr("add-orchestrator")));  // no such command
  EXPECT_FALSE(std::filesystem::exists(state));
}

TEST_F(OrchestratorDaemonRefusalTest, AnExpiredUserKitIsCaughtBeforeDialling) {
  Output expired_user = fed().Run("jobs --kit " + old_ + "/carol --orchestrator " + target_);
  EXPECT_EQ(expired_user.status, 2);
  EXPECT_THAT(expired_user.err, HasSubstr("this kit's certificate expired on"));
}

// A network failure is not the kit's fault: a certificate problem ends the
// silo after 3 attempts, a network failure does not: it is still there,
// retrying, after a fourth.
TEST_F(OrchestratorDaemonRefusalTest, ANetworkFailureKeepsTheSiloRetrying) {
  auto pid = SpawnProcess(Binary(),
                          {"fedsilo", "silo", "--kit", fed().dir() + "/kits/c", "--datasets",
                           fed().dir() + "/datasets.yaml", "--orchestrator", "127.0.0.1:1"},
                          fed().dir() + "/unreachable.log");
  ASSERT_TRUE(pid.ok());
  const std::string retrying =
      "connection to 127.0.0.1:1 failed: cannot reach 127.0.0.1:1 (Connection refused); retrying";
  EXPECT_TRUE(WaitUntil([&] {
    return CountInFile(fed().dir() + "/unreachable.log", retrying) >= 4 ||
           waitpid(*pid, nullptr, WNOHANG) != 0;
  }));
  EXPECT_EQ(waitpid(*pid, nullptr, WNOHANG), 0) << "the silo gave up on a network failure";
  StopProcess(*pid, SIGKILL, 0ms);
  EXPECT_THAT(Read(fed().dir() + "/unreachable.log"), HasSubstr(retrying));
}

// A vertical job (docs/vertical.md) on the example's three organisations as
// silos a (the bank, with the label), b (the telecom) and c (the retailer),
// each with its own catalog and policy, and the same job file run in
// simulation; then a job on a dataset silo c's policy keeps out of vertical
// jobs. All done when the tests start.
class OrchestratorDaemonVerticalTest : public SharedFederationTest<OrchestratorDaemonVerticalTest> {
 public:
  static constexpr char kName[] = "vertical";
  static std::string Start(Federation& fed) {
    const std::map<std::string, std::string> files = {
        {"a", "bank"}, {"b", "telecom"}, {"c", "retailer"}};
    for (const auto& [silo, org] : files) {
      const std::string csv = fs::absolute("examples/vertical/data/" + org + ".csv").string();
      const std::string more = org == "bank"      ? ", label: is_fraud"
                               : org == "telecom" ? ", categorical: [plan], missing: impute"
                                                  : "";
      std::ofstream(fed.dir() + "/" + silo + "-catalog.yaml")
          << "datasets:\n"
          << "  customers: {csv: " << csv << ", id: customer_id" << more << "}\n"
          << "  customers-private: {csv: " << csv << ", id: customer_id" << more << "}\n";
    }
    // Bottom models of the parties' own design (a TorchScript module with
    // one per party: 5 columns at a, the 2 b exposes, 5 at c), which every
    // silo's policy lists.
    module_ = fed.dir() + "/bottoms.pt";
    {
      ml::ScriptedModule bottoms;
      for (const auto& [party, columns] :
           std::vector<std::pair<std::string, int64_t>>{{"a", 5}, {"b", 2}, {"c", 5}}) {
        ml::ScriptedModule bottom;
        bottom.parameters = {{"weight", {8, columns}}, {"bias", {8}}};
        bottom.methods =
            "def forward(self, x):\n"
            "    return torch.relu(torch.matmul(x, self.weight.t()) + self.bias)\n";
        bottoms.submodules.emplace_back(party, bottom);
      }
      if (!ml::WriteScriptedModule(bottoms, module_).ok()) return "the bottom models' module";
    }
    const std::string allowed =
        absl::StrCat("allowed_models: [sha256:", secure::BytesDigest(Read(module_)), "]");
    // The telecom exposes two of its columns; the retailer keeps its second
    // dataset out of vertical jobs (the default).
    std::ofstream(fed.dir() + "/a-policy.yaml")
        << "defaults: {vertical: {allow: true}, " << allowed << "}\n";
    std::ofstream(fed.dir() + "/b-policy.yaml")
        << "defaults: {vertical: {allow: true}, " << allowed << "}\n"
        << "datasets:\n  customers:\n    vertical:\n      allow: true\n"
        << "      columns: [sim_swaps_90d, device_changes_90d]\n";
    std::ofstream(fed.dir() + "/c-policy.yaml")
        << "datasets:\n  customers: {vertical: {allow: true}, " << allowed << "}\n";
    if (!fed.StartOrchestrator()) return Read(fed.dir() + "/orchestrator.log");
    for (const char* s : {"a", "b", "c"}) {
      fed.StartSilo(s, {"--datasets", fed.dir() + "/" + s + "-catalog.yaml", "--policy",
                        fed.dir() + "/" + s + "-policy.yaml"});
    }
    const std::string job = absl::StrCat(
        "name: vertical\nkind: vertical\nseed: 1\n"
        "data: {dataset: customers, catalog: '",
        fed.dir(),
        "/{silo}-catalog.yaml', test_fraction: 0.2}\n"
        "preprocess: {scale: standard, categories: {plan: [prepaid, postpaid, business]}}\n"
        "model: {name: mlp, hidden: [16]}\n"
        "training: {rounds: 3, batch_size: 64, optimizer: adam, learning_rate: 0.003}\n"
        "federation: {silos: [a, b, c], wait_for_silos: 180}\n"
        "vertical: {label_owner: a, cut_width: 8, top_hidden: [16]}\n");
    job_ = fed.WriteJob("vertical", job);
    Output submitted = fed.User("submit " + job_);
    if (submitted.status != 0) return "submit: " + submitted.err;
    Output waited = fed.User("status job-1 --wait");
    if (waited.status != 0) return "job-1: " + waited.out + waited.err;
    Output sim = fed.Run("run " + job_ + " --quiet --json --workdir " + fed.dir() + "/sim");
    if (sim.status != 0) return "simulation: " + sim.err;
    simulated_ = LastJson(sim.out);
    const std::string refused = fed.WriteJob(
        "refused",
        absl::StrReplaceAll(job, {{"dataset: customers,", "dataset: customers-private,"}}));
    if (fed.User("submit " + refused).status != 0) return "submit of the refused job";
    refused_ = fed.User("status job-2 --wait");
    // The same people scored with the parts job-1's silos kept.
    trained_run_ = fed.Status("job-1")["run_id"];
    const std::string predict =
        fed.WriteJob("predict", absl::StrReplaceAll(job, {{"top_hidden: [16]}",
                                                           "top_hidden: [16], "
                                                           "predict_with: " +
                                                               trained_run_ + "}"}}));
    if (fed.User("submit " + predict).status != 0) return "submit of the predicting job";
    Output predicted = fed.User("status job-3 --wait");
    if (predicted.status != 0) return "job-3: " + predicted.out + predicted.err;
    // The same job with the TorchScript bottom models, which `fedsilo submit`
    // ships beside it.
    const std::string scripted = fed.WriteJob(
        "scripted",
        absl::StrReplaceAll(job, {{"model: {name: mlp, hidden: [16]}",
                                   "model: {name: torchscript, torchscript: '" + module_ + "'}"},
                                  {"rounds: 3", "rounds: 2"}}));
    if (fed.User("submit " + scripted).status != 0) return "submit of the TorchScript job";
    Output scripted_done = fed.User("status job-4 --wait");
    if (scripted_done.status != 0) return "job-4: " + scripted_done.out + scripted_done.err;
    return "";
  }

 protected:
  static inline std::string module_;
  static inline std::string trained_run_;
  static inline std::string job_;
  static inline nlohmann::json simulated_;
  static inline Output refused_;
};

TEST_F(OrchestratorDaemonVerticalTest, TheJobIsDoneAndFindsTheSimulationsIntersection) {
  const nlohmann::json status = fed().Status("job-1");
  EXPECT_EQ(status["state"], "done");
  EXPECT_EQ(status["rounds_completed"], 3);
  const nlohmann::json& latest = status["latest_metrics"];
  EXPECT_GT(latest["global/test_auc"].get<double>(), 0.8) << latest;
  ASSERT_TRUE(simulated_.contains("psi")) << simulated_;
  const int64_t intersection = simulated_["psi"]["intersection"].get<int64_t>();
  EXPECT_GT(intersection, 1000);
  EXPECT_EQ(latest["global/psi_intersection"].get<int64_t>(), intersection) << latest;
  EXPECT_THAT(fed().User("logs job-1").out,
              HasSubstr(absl::StrCat("private set intersection: ", intersection, " people")));
}

TEST_F(OrchestratorDaemonVerticalTest, EachPartyAuditsWhatItRevealedAndKeepsItsModels) {
  const std::map<std::string, std::vector<std::string>> others = {
      {"a", {"b", "c"}}, {"b", {"a", "c"}}, {"c", {"a", "b"}}};
  for (const auto& [silo, peers] : others) {
    const std::vector<nlohmann::json> entries =
        AuditEntries(fed().dir() + "/kits/" + silo + "/state/audit.log");
    for (const std::string event : {"vertical_job_received", "vertical_job_opened",
                                    "vertical_ids_blinded", "vertical_rows_aligned"}) {
      EXPECT_FALSE(EntriesOf(entries, event).empty()) << silo << " " << event;
    }
    // One other party's set each, named, with its size, in the job that
    // trained.
    std::vector<std::string> blinded_for;
    for (const auto& e : EntriesOf(entries, "vertical_set_blinded")) {
      if (e["data"]["job"] != trained_run_) continue;  // the predicting job's
      blinded_for.push_back(e["data"]["for"].get<std::string>());
      EXPECT_GT(std::stoll(e["data"]["ids"].get<std::string>()), 4000) << e;
    }
    std::sort(blinded_for.begin(), blinded_for.end());
    EXPECT_EQ(blinded_for, peers) << silo;
    // Only the jobs that trained keep models (the refused one never began;
    // the one that predicts keeps its predictions at the label owner).
    std::set<std::string> runs;
    for (const auto& e : fs::directory_iterator(fed().dir() + "/kits/" + silo + "/state/vertical"))
      if (fs::exists(e.path() / "bottom.fsm")) runs.insert(e.path().filename().string());
    EXPECT_EQ(runs, (std::set<std::string>{trained_run_, fed().Status("job-4")["run_id"]})) << silo;
    const std::string kept = fed().dir() + "/kits/" + silo + "/state/vertical/" + trained_run_;
    EXPECT_TRUE(fs::exists(kept + "/bottom.fsm")) << kept;
    EXPECT_EQ(fs::exists(kept + "/top.fsm"), silo == "a") << kept;
    EXPECT_FALSE(fs::exists(kept + "/bottom.pt")) << kept;  // a built-in bottom model
    // The telecom's bottom model reads the two columns its policy exposes.
    if (silo == "b") EXPECT_EQ(Tensors(kept + "/bottom.fsm").tensors()[0].shape().back(), 2);
  }
}

TEST_F(OrchestratorDaemonVerticalTest, ASiloPredictsWithItsPartAndTheLabelOwnerKeepsThem) {
  const nlohmann::json status = fed().Status("job-3");
  ASSERT_EQ(status["state"], "done") << status;
  EXPECT_EQ(status["rounds_completed"], 1);
  const int64_t intersection = simulated_["psi"]["intersection"].get<int64_t>();
  const nlohmann::json& latest = status["latest_metrics"];
  EXPECT_EQ(latest["global/psi_intersection"].get<int64_t>(), intersection) << latest;
  // Its metrics stay with the label owner: over rows the orchestrator chose,
  // with the model fixed, they would tell labels.
  for (const char* metric : {"global/test_auc", "global/test_loss", "global/test_accuracy"}) {
    EXPECT_FALSE(latest.contains(metric)) << latest;
  }
  const std::string run = status["run_id"];
  // The predictions stay with the label owner, one per person aligned.
  const std::string csv = Read(fed().dir() + "/kits/a/state/vertical/" + run + "/predictions.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "customer_id,predicted,p_0,p_1,is_fraud");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), intersection + 1);
  for (const char* silo : {"b", "c"}) {
    EXPECT_FALSE(fs::exists(fed().dir() + "/kits/" + silo + "/state/vertical/" + run)) << silo;
  }
  // Its operator reads them with the silo's command (which opens them when
  // the silo encrypts its files).
  const std::string kit = " --kit " + fed().dir() + "/kits/a";
  Output shown = fed().Run("silo predictions " + run + kit);
  ASSERT_EQ(shown.status, 0) << shown.err;
  EXPECT_EQ(shown.out, csv);
  Output none = fed().Run("silo predictions " + trained_run_ + kit);
  EXPECT_EQ(none.status, 2);
  EXPECT_THAT(none.err, HasSubstr("it kept those of: " + run));
  const std::vector<nlohmann::json> kept =
      EntriesOf(AuditEntries(fed().dir() + "/kits/a/state/audit.log"), "vertical_predictions_kept");
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0]["data"]["rows"], std::to_string(intersection));
  EXPECT_EQ(kept[0]["data"]["predict_with"], trained_run_);
}

// Bottom models from the job's TorchScript module: shipped by submit, kept
// by the orchestrator and each silo under its digest, run in each silo's
// sandbox (each party its own submodule), and kept with each party's part.
TEST_F(OrchestratorDaemonVerticalTest, TorchScriptBottomModelsShipWithTheJobAndTrainAtEachSilo) {
  const nlohmann::json status = fed().Status("job-4");
  ASSERT_EQ(status["state"], "done") << status;
  EXPECT_EQ(status["rounds_completed"], 2);
  EXPECT_GT(status["latest_metrics"]["global/test_auc"].get<double>(), 0.7) << status;
  const std::string module = Read(module_);
  const std::string digest = secure::BytesDigest(module);
  EXPECT_EQ(ReadFileOpeningSealed(fed().dir() + "/state/models/" + digest + ".pt").value_or(""),
            module);
  const std::string run = status["run_id"];
  for (const char* silo : {"a", "b", "c"}) {
    const std::string state = fed().dir() + "/kits/" + silo + "/state";
    EXPECT_EQ(ReadFileOpeningSealed(state + "/models/" + digest + ".pt").value_or(""), module)
        << silo;
    EXPECT_EQ(ReadFileOpeningSealed(state + "/vertical/" + run + "/bottom.pt").value_or(""), module)
        << silo;
    // The submodule's weights, trained: [8, columns] (b's policy exposes 2).
    const ModelState bottom = Tensors(state + "/vertical/" + run + "/bottom.fsm");
    ASSERT_EQ(bottom.tensors().size(), 2u) << silo;
    EXPECT_EQ(bottom.tensors()[0].name(), "weight");
    EXPECT_EQ(bottom.tensors()[0].shape().back(), std::string(silo) == "b" ? 2 : 5) << silo;
  }
}

TEST_F(OrchestratorDaemonVerticalTest, ASilosPolicyKeepsItsDatasetOutOfVerticalJobs) {
  EXPECT_NE(refused_.status, 0);
  const nlohmann::json status = fed().Status("job-2");
  EXPECT_EQ(status["state"], "failed");
  EXPECT_THAT(status["error"].get<std::string>(), HasSubstr("silo 'c'"));
  EXPECT_THAT(status["error"].get<std::string>(),
              HasSubstr("datasets.customers-private.vertical.allow"));
  const std::vector<nlohmann::json> entries = AuditEntries(fed().dir() + "/kits/c/state/audit.log");
  EXPECT_FALSE(EntriesOf(entries, "refused").empty());
}

// A job on the silos' own CSV files with secure aggregation, done when the
// tests start. Secure aggregation masks the model updates only: the
// statistics and the evaluations still reach the orchestrator per silo
// (documented disclosure). Both ends audit each secure-aggregation reply.
class OrchestratorDaemonSecureCsvTest
    : public SharedFederationTest<OrchestratorDaemonSecureCsvTest> {
 public:
  static constexpr char kName[] = "secure-csv";
  static std::string Start(Federation& fed) {
    const std::string data = std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/fraud/data/";
    fs::copy_file(data + "east.csv", fed.dir() + "/a.csv");
    fs::copy_file(data + "west.csv", fed.dir() + "/b.csv");
    fs::copy_file(data + "south.csv", fed.dir() + "/c.csv");
    std::ofstream(fed.dir() + "/datasets.yaml")
        << "datasets:\n  transactions: {csv: '{silo}.csv', label: is_fraud, "
           "categorical: [merchant], missing: impute}\n";
    if (!fed.StartOrchestrator()) return Read(fed.dir() + "/orchestrator.log");
    for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
    const std::string job = fed.WriteJob(
        "fraud",
        "name: fraud\nseed: 1\ndata: {dataset: transactions, silo_test_fraction: 0.3}\n"
        "preprocess:\n  scale: standard\n  categories:\n"
        "    merchant: [grocery, restaurant, online, travel, atm, electronics]\n"
        "model: {name: mlp, hidden: [16]}\n"
        "training: {rounds: 2, batch_size: 64, optimizer: adam, learning_rate: 0.003}\n"
        "privacy: {secure_aggregation: true}\n"
        "federation: {silos: [a, b, c], min_silos: 3, wait_for_silos: 180}\n");
    Output submitted = fed.User("submit " + job);
    if (submitted.status != 0) return "submit: " + submitted.err;
    Output waited = fed.User("status job-1 --wait");
    if (waited.status != 0) {
      return "job-1: " + waited.out + waited.err + Read(fed.dir() + "/orchestrator.log");
    }
    return "";
  }
};

// The premise of the suite's other tests: the job's rounds were summed
// securely, and the orchestrator never fetched a silo's update.
TEST_F(OrchestratorDaemonSecureCsvTest, EveryRoundWasAggregatedSecurely) {
  const std::vector<nlohmann::json> log = AuditEntries(fed().dir() + "/state/audit.log");
  const std::vector<nlohmann::json> aggregates = EntriesOf(log, "aggregate");
  ASSERT_EQ(aggregates.size(), 2u);
  for (const auto& e : aggregates) EXPECT_EQ(e["data"]["secure"], "true") << e;
  EXPECT_TRUE(EntriesOf(log, "update_received").empty());
}

// Each silo's row count from the statistics task is the orchestrator's,
// per silo, and they add up to the federation's; each silo's score of the
// global model is there per silo too.
TEST_F(OrchestratorDaemonSecureCsvTest, StatisticsAndEvaluationsStillReachTheOrchestratorPerSilo) {
  const nlohmann::json status = fed().Status("job-1");
  const nlohmann::json& latest = status["latest_metrics"];
  ASSERT_TRUE(latest.contains("global/rows")) << latest;
  double rows = 0;
  for (const char* silo : {"a", "b", "c"}) {
    const std::string key = std::string(silo) + "/rows";
    ASSERT_TRUE(latest.contains(key)) << key << " " << latest;
    EXPECT_GT(latest[key].get<double>(), 0) << key;
    rows += latest[key].get<double>();
    EXPECT_TRUE(latest.contains(std::string(silo) + "/global_test_auc")) << silo << latest;
  }
  EXPECT_EQ(rows, latest["global/rows"].get<double>());
  EXPECT_EQ(latest["global/rows"], 4549);  // silo_test_fraction 0.3 of 6 500
  EXPECT_THAT(fed().User("logs job-1").out, HasSubstr("statistics: 4549 training rows"));
}

// Every secure-aggregation reply a silo sent is in its own audit log and in
// the orchestrator's, with the same digest, round by round; so is who
// trained (the update "kept to mask").
TEST_F(OrchestratorDaemonSecureCsvTest, BothAuditLogsRecordEachSecureReplyWithTheSameDigest) {
  const std::vector<nlohmann::json> orchestrator = AuditEntries(fed().dir() + "/state/audit.log");
  for (const std::string silo : {"a", "b", "c"}) {
    const std::vector<nlohmann::json> own =
        AuditEntries(fed().dir() + "/kits/" + silo + "/state/audit.log");
    std::multiset<std::pair<std::string, std::string>> sent, received;  // (round, digest)
    for (const auto& e : EntriesOf(own, "secure_reply")) {
      sent.emplace(e["data"]["round"].get<std::string>(), e["data"]["reply"].get<std::string>());
    }
    for (const auto& e : EntriesOf(orchestrator, "secure_reply")) {
      if (e["data"]["silo"] != silo) continue;
      received.emplace(e["data"]["round"].get<std::string>(),
                       e["data"]["reply"].get<std::string>());
    }
    // Several stages a round, in both rounds.
    EXPECT_GE(sent.size(), 2u * 2) << silo;
    EXPECT_EQ(sent, received) << silo;
    int trained_here = 0, trained_there = 0;
    for (const auto& e : EntriesOf(own, "trained")) {
      EXPECT_EQ(e["data"]["update"], "kept to mask") << e;
      ++trained_here;
    }
    for (const auto& e : EntriesOf(orchestrator, "trained")) {
      trained_there += e["data"]["silo"] == silo ? 1 : 0;
    }
    EXPECT_EQ(trained_here, 2) << silo;
    EXPECT_EQ(trained_there, 2) << silo;
  }
}

// Each silo's ledger, as `fedsilo silo ledger --json` prints it, records the
// sums it revealed its shares for: one per round, over all three silos, each
// keyed on the global model the orchestrator sent that silo for its round.
TEST_F(OrchestratorDaemonSecureCsvTest, EachSilosLedgerShowsTheSumsItRevealedSharesFor) {
  std::map<std::pair<std::string, int>, std::string> sent;  // (silo, round) -> model digest
  for (const auto& e : EntriesOf(AuditEntries(fed().dir() + "/state/audit.log"), "model_sent")) {
    const int round = std::stoi(e["data"]["round"].get<std::string>());
    sent[{e["data"]["silo"].get<std::string>(), round}] = e["data"]["model"];
  }
  for (const std::string silo : {"a", "b", "c"}) {
    Output shown = fed().Run("silo ledger --kit " + fed().dir() + "/kits/" + silo + " --json");
    ASSERT_EQ(shown.status, 0) << silo << ": " << shown.err;
    const nlohmann::json ledger = LastJson(shown.out);
    EXPECT_EQ(ledger["silo"], silo);
    std::vector<nlohmann::json> reveals;
    for (const auto& entry : ledger["entries"]) {
      if (entry["dataset"] != "transactions") continue;
      for (const auto& r : entry["secure_aggregation_reveals"]) reveals.push_back(r);
    }
    ASSERT_EQ(reveals.size(), 2u) << silo << ": " << shown.out;
    std::set<int> rounds;
    for (const auto& r : reveals) {
      const int round = r["round"].get<int>();
      rounds.insert(round);
      EXPECT_EQ(r["survivors"], nlohmann::json({"a", "b", "c"})) << silo;
      const auto key = std::make_pair(silo, round);
      ASSERT_TRUE(sent.count(key)) << silo << " round " << round;
      EXPECT_EQ(r["model"], sent[key]) << silo << " round " << round;
    }
    EXPECT_EQ(rounds, (std::set<int>{1, 2})) << silo;
  }
}

}  // namespace
}  // namespace fedsilo
