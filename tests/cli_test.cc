// End-to-end: runs the fedsilo binary as a user would, on the real small data
// sets fetched by scripts/setup, with real training.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/model_state_file.h"
#include "core/subprocess.h"
#include "fake_mlflow.h"
#include "ml/dataset_catalog.h"
#include "ml/scripted_module.h"
#include "test_util.h"

namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

using fedsilo::testing_util::Fedsilo;
using fedsilo::testing_util::LastJson;
using fedsilo::testing_util::Output;
using fedsilo::testing_util::ReadAll;
using fedsilo::testing_util::ReadCsv;
using fedsilo::testing_util::WaitForText;
using fedsilo::testing_util::WaitUntil;

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

std::string SourceDir() { return Env("FEDSILO_SOURCE_DIR", FEDSILO_TEST_SOURCE_DIR); }

std::string Workdir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/cli_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string Example(const std::string& name) { return SourceDir() + "/examples/" + name; }

bool DataPresent() {
  const char* env = std::getenv("FEDSILO_DATA");
  const std::string dir = env != nullptr ? env : SourceDir() + "/data";
  return fs::exists(dir + "/sklearn/digits.csv.gz");
}

#define REQUIRE_DATA() \
  if (!DataPresent()) GTEST_SKIP() << "data sets missing: run scripts/setup"

// A run's metrics.jsonl (written without a key ring): name -> round -> value,
// NaN where the value was not a number.
std::map<std::string, std::map<int, double>> RunMetrics(const std::string& run_dir) {
  std::map<std::string, std::map<int, double>> out;
  std::ifstream metrics(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json m = nlohmann::json::parse(line);
    out[m["name"]][m["round"]] = m["value"].is_number() ? m["value"].get<double>() : std::nan("");
  }
  return out;
}

// The release comes from CMake's project(VERSION), and the job file
// reference is the table the parser reads (docs/job-reference.md).
TEST(CliTest, VersionIsTheProjectsAndValidatePrintsTheJobReference) {
  std::ifstream cmake(std::string(FEDSILO_TEST_SOURCE_DIR) + "/CMakeLists.txt");
  std::stringstream text;
  text << cmake.rdbuf();
  std::smatch project;
  const std::string cmake_text = text.str();
  ASSERT_TRUE(
      std::regex_search(cmake_text, project, std::regex(R"(project\(fedsilo VERSION ([0-9.]+))")));
  Output version = Fedsilo("--version");
  EXPECT_EQ(version.status, 0) << version.err;
  EXPECT_EQ(version.out, "fedsilo " + project[1].str() + "\n");

  Output reference = Fedsilo("validate --reference");
  ASSERT_EQ(reference.status, 0) << reference.err;
  std::ifstream doc(std::string(FEDSILO_TEST_SOURCE_DIR) + "/docs/job-reference.md");
  std::stringstream committed;
  committed << doc.rdbuf();
  EXPECT_EQ(reference.out, committed.str());
  EXPECT_THAT(reference.out, HasSubstr("| `training.lr_decay` | number | `1` | (0, 1] | 2 |"));
  Output neither = Fedsilo("validate");
  EXPECT_EQ(neither.status, 2);
  EXPECT_THAT(neither.err, HasSubstr("job (or --reference) is required"));
  Output both = Fedsilo("validate " + Example("digits.yaml") + " --reference");
  EXPECT_EQ(both.status, 2);
  EXPECT_THAT(both.err, HasSubstr("excludes"));
}

// State written by fedsilo 0.2.0 -- tests/fixtures/state-0.2.0, made by
//   fedsilo run examples/digits.yaml --workdir state --silo-policy policy.yaml
//     --set training.rounds=2 --set federation.silos=2 --set training.momentum=0
//     --set privacy.dp.mode=local --set privacy.dp.target_epsilon=3
// (a run store, a run folder, two silos' privacy ledgers) -- is read by this
// release, and a new run goes on from it. Keep it; add one for each release
// whose formats change.
TEST(CliTest, StateMadeByRelease020IsReadAndANewRunGoesOnFromIt) {
  REQUIRE_DATA();
  const std::string dir = Workdir("state_0_2_0");
  fs::copy(SourceDir() + "/tests/fixtures/state-0.2.0", dir, fs::copy_options::recursive);
  // The fixture's one run, and what its summary says of it.
  std::string run_id;
  for (const auto& entry : fs::directory_iterator(dir + "/runs")) {
    run_id = entry.path().filename().string();
  }
  std::ifstream summary_file(dir + "/runs/" + run_id + "/summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_file);
  ASSERT_EQ(summary["run_id"], run_id);
  const std::string workdir = " --workdir " + dir;

  Output list = Fedsilo("runs list --json" + workdir);
  ASSERT_EQ(list.status, 0) << list.err;
  const nlohmann::json runs = nlohmann::json::parse(list.out);
  ASSERT_EQ(runs.size(), 1u) << list.out;
  EXPECT_EQ(runs[0]["run_id"], run_id);
  EXPECT_EQ(runs[0]["state"], "done");
  EXPECT_EQ(runs[0]["rounds_completed"], 2);
  EXPECT_EQ(runs[0]["final_metrics"]["global/test_accuracy"], summary["final"]["accuracy"]);
  Output show = Fedsilo("runs show " + run_id + " --json" + workdir);
  ASSERT_EQ(show.status, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("round 2/2 done"));

  Output again = Fedsilo("run " + Example("digits.yaml") + workdir + " --silo-policy " + dir +
                         "/policy.yaml --quiet --set training.rounds=2 --set federation.silos=2 "
                         "--set training.momentum=0 --set privacy.dp.mode=local "
                         "--set privacy.dp.target_epsilon=3");
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(Fedsilo("runs list --json" + workdir).out).size(), 2u);
  for (const char* silo : {"silo-1", "silo-2"}) {
    const std::string ledger_path = std::string("/silos/") + silo + "/privacy-ledger.json";
    std::ifstream before_file(SourceDir() + "/tests/fixtures/state-0.2.0" + ledger_path);
    const nlohmann::json before = nlohmann::json::parse(before_file);
    std::ifstream after_file(dir + ledger_path);
    const nlohmann::json after = nlohmann::json::parse(after_file);
    ASSERT_EQ(before["entries"].size(), 1u) << silo;
    ASSERT_EQ(after["entries"].size(), 2u) << silo;  // the release's entry, and the new one
    EXPECT_EQ(after["entries"][0]["run_id"], run_id) << silo;
    EXPECT_EQ(after["entries"][0]["epsilon"], before["entries"][0]["epsilon"]) << silo;
    EXPECT_NE(after["entries"][1]["run_id"], run_id) << silo;
  }
}

// Every command that reads or writes run or state files takes the key ring
// the same way, before it does anything else: a ring that cannot be read
// stops each one, naming it, with exit status 2 (the commands register their
// needs with one registry, so none can skip it).
TEST(CliTest, EveryCommandTakingAKeyRingInstallsItBeforeItRuns) {
  const std::string dir = Workdir("every_ring");
  const std::string ring = dir + "/missing/ring.yaml";
  const std::vector<std::string> commands = {
      "run " + Example("digits.yaml") + " --workdir " + dir,
      "silo --kit " + dir + "/kit --datasets " + dir + "/datasets.yaml",
      "silo --kit " + dir + "/kit ledger",
      "orchestrator --kit " + dir + "/kit",
      "export some-run --out " + dir + "/model.pt --workdir " + dir,
      "predict some-run --data " + dir + "/rows.csv --workdir " + dir,
      "ui --port 0 --workdir " + dir,
      "runs list --workdir " + dir,
      "runs show some-run --workdir " + dir,
      "runs compare run-a run-b --workdir " + dir,
      "runs export some-run --workdir " + dir,
      "audit verify " + dir + "/audit.log",
      "keys seal-existing " + dir,
  };
  for (const std::string& command : commands) {
    Output out = Fedsilo(command + " --storage-keys " + ring);
    EXPECT_EQ(out.status, 2) << command << ": " << out.err;
    EXPECT_THAT(out.err, HasSubstr(ring + ": no such storage key ring")) << command;
  }
  // Nothing was written: the commands stopped before their work.
  EXPECT_TRUE(fs::is_empty(dir));
}

// The command line's parsing: each mistake is named (the word, the command,
// the nearest right spelling) with exit status 2, before anything runs.
TEST(CliTest, CommandLineMistakesAreNamedWithExitStatus2) {
  const std::string job = Example("digits.yaml");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "'fedsilo' needs a command: run, silo, orchestrator"},
      {"--bogus", "unknown option '--bogus' for 'fedsilo'"},
      {"trian", "unknown command 'trian' for 'fedsilo'"},
      {"rnu " + job, "unknown command 'rnu' for 'fedsilo' (did you mean 'run'?)"},
      {"keys", "'fedsilo keys' needs a command: new, show, rotate, seal-existing"},
      {"keys rotat", "unknown command 'rotat' for 'fedsilo keys' (did you mean 'rotate'?)"},
      {"runs --bogus", "unknown option '--bogus' for 'fedsilo runs'"},
      {"run " + job + " --sett training.rounds=2",
       "unknown option '--sett' for 'fedsilo run' (did you mean '--set'?)"},
      {"silo --kit k --datasets d --polcy p",
       "unknown option '--polcy' for 'fedsilo silo' (did you mean '--policy'?)"},
      {"run", "give the job file to run (or --resume RUN"},
      {"run --resume some-run --set training.rounds=3",
       "--set: a resumed run keeps its recorded job"},
      {"run " + job + " --set", "--set: 1 required TEXT missing"},
      {"run " + job + " --set rounds", "--set 'rounds': expected key=value"},
      {"run " + job + " --set training.rounds=abc",
       "--set training.rounds: must be an integer in [1, 100000], got 'abc'"},
      {"run " + job + " --set training.roundz=3",
       "unknown key 'training.roundz' (did you mean 'training.rounds'?)"},
      {"run /nonexistent/job.yaml", "/nonexistent/job.yaml: no such file"},
      {"ui --port 70000", "--port: Value 70000 not in range 0 to 65535"},
      {"submit " + job, "--kit is required"},
  };
  for (const auto& [args, error] : cases) {
    Output r = Fedsilo(args);
    EXPECT_EQ(r.status, 2) << "fedsilo " << args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(error)) << "fedsilo " << args;
    EXPECT_TRUE(r.out.empty()) << "fedsilo " << args << "\n" << r.out;
  }
  // Help and the version are answers, not mistakes.
  Output help = Fedsilo("keys --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_THAT(help.out, HasSubstr("rotate"));
  Output version = Fedsilo("--version");
  EXPECT_EQ(version.status, 0);
  EXPECT_THAT(version.out, HasSubstr("fedsilo 0."));
}

TEST(CliTest, DigitsJobLearnsAndWritesItsRunDirectory) {
  REQUIRE_DATA();
  const std::string workdir = Workdir("digits");
  Output r = Fedsilo("run " + Example("digits.yaml") +
                     " --set training.rounds=6 --json --workdir " + workdir);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("round 6/6"));
  EXPECT_THAT(r.out, HasSubstr("eta"));
  nlohmann::json summary = LastJson(r.out);
  EXPECT_EQ(summary["rounds_completed"], 6);
  EXPECT_GT(summary["final"]["accuracy"].get<double>(), 0.85);
  EXPECT_GT(summary["wall_seconds"].get<double>(), 0);
  EXPECT_GE(summary["overhead_fraction"].get<double>(), 0);
  // Ten classes: no precision, recall or AUC (they are for two).
  EXPECT_TRUE(summary["final"].contains("loss")) << summary;
  for (const char* two_class : {"precision", "recall", "auc"}) {
    EXPECT_FALSE(summary["final"].contains(two_class)) << summary;
  }

  const std::string run_dir = summary["run_dir"];
  EXPECT_EQ(fs::path(run_dir).parent_path(), fs::path(workdir) / "runs");
  EXPECT_TRUE(fs::exists(run_dir + "/job.yaml"));
  std::stringstream job;
  job << std::ifstream(run_dir + "/job.yaml").rdbuf();
  EXPECT_THAT(job.str(), HasSubstr("rounds: 6"));  // the override is recorded

  // metrics.jsonl: global accuracy for rounds 1..6 and per-silo metrics.
  std::ifstream metrics(run_dir + "/metrics.jsonl");
  std::map<int, double> global_accuracy;
  int silo_lines = 0;
  for (std::string line; std::getline(metrics, line);) {
    nlohmann::json m = nlohmann::json::parse(line);
    if (m["name"] == "global/test_accuracy") global_accuracy[m["round"]] = m["value"];
    if (m["name"] == "silo-3/train_loss") ++silo_lines;
    EXPECT_EQ(m["name"].get<std::string>().find("_auc"), std::string::npos) << m;
  }
  ASSERT_EQ(global_accuracy.size(), 6u);
  EXPECT_EQ(silo_lines, 6);
  EXPECT_GT(global_accuracy[6], global_accuracy[1]);
  EXPECT_DOUBLE_EQ(global_accuracy[6], summary["final"]["accuracy"].get<double>());

  // The final model and each round's checkpoint load back.
  auto final_model = fedsilo::ReadModelStateFile(summary["final_model"]);
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  EXPECT_EQ(final_model->metadata.at("round"), "6");
  for (int round = 1; round <= 6; ++round) {
    char name[64];
    std::snprintf(name, sizeof(name), "/checkpoints/round-%04d.fsm", round);
    EXPECT_TRUE(fedsilo::ReadModelStateFile(run_dir + name).ok()) << name;
  }
}

// A run prints one line per round (docs/running-jobs.md):
//   round  7/20  loss 0.1747  accuracy 0.9415  silos 5/5  0.0s  elapsed 0.1s  eta 0.2s
// the round right-aligned to the total's width, the loss and accuracy those of
// the global model the run recorded for that round.
TEST(CliTest, EachRoundPrintsOneLineWithLossAccuracySilosAndEta) {
  REQUIRE_DATA();
  Output r = Fedsilo("run " + Example("digits.yaml") + " --set training.rounds=10 --json" +
                     " --workdir " + Workdir("round_lines"));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto metrics = RunMetrics(LastJson(r.out)["run_dir"]);
  std::vector<std::string> lines;
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) {
    if (line.rfind("round", 0) == 0) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 10u) << r.out;
  const std::string duration = R"((\d+\.\ds|\d+m\d\ds))";
  const std::regex shape("round +([0-9]+)/10  loss ([0-9.]+)  accuracy ([0-9.]+)  silos 5/5  " +
                         duration + "  elapsed " + duration + "  eta " + duration);
  for (int round = 1; round <= 10; ++round) {
    const std::string& line = lines[round - 1];
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, shape)) << line;
    char start[32], loss[32], accuracy[32];
    std::snprintf(start, sizeof(start), "round %2d/10  ", round);
    std::snprintf(loss, sizeof(loss), "%.4f", metrics.at("global/test_loss").at(round));
    std::snprintf(accuracy, sizeof(accuracy), "%.4f", metrics.at("global/test_accuracy").at(round));
    EXPECT_EQ(line.rfind(start, 0), 0u) << line;
    EXPECT_EQ(m[2].str(), loss) << line;
    EXPECT_EQ(m[3].str(), accuracy) << line;
  }
  EXPECT_THAT(lines.back(), ::testing::EndsWith("eta 0.0s"));
}

// checkpoint.every: 0 keeps no checkpoint, only the final model; export
// says so when asked for a round.
TEST(CliTest, CheckpointEveryZeroKeepsOnlyTheFinalModel) {
  REQUIRE_DATA();
  const std::string dir = Workdir("checkpoint_every_0");
  Output r =
      Fedsilo("run " + Example("digits.yaml") +
              " --set training.rounds=2 --set checkpoint.every=0 --quiet --json --workdir " + dir);
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json summary = LastJson(r.out);
  const std::string checkpoints = summary["run_dir"].get<std::string>() + "/checkpoints";
  EXPECT_TRUE(!fs::exists(checkpoints) || fs::is_empty(checkpoints));
  auto final_model = fedsilo::ReadModelStateFile(summary["final_model"]);
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  EXPECT_EQ(final_model->metadata.at("round"), "2");
  const std::string run_id = summary["run_id"];
  for (const char* round : {"1", "2"}) {
    Output kept = Fedsilo("export " + run_id + " --round " + round + " --out " + dir +
                          "/r.fsm --workdir " + dir);
    EXPECT_EQ(kept.status, 2) << round;
    EXPECT_THAT(kept.err, HasSubstr("kept no checkpoint of round " + std::string(round) +
                                    " (kept: none; checkpoint.every is 0)"));
  }
  EXPECT_EQ(Fedsilo("export " + run_id + " --out " + dir + "/final.fsm --workdir " + dir).status,
            0);
}

// A simulation killed mid-run goes on with `run --resume` from its last
// committed round, in its own run folder, and ends with the model of a run
// nobody killed: FedAdam's server moments come back with the checkpoint.
TEST(CliTest, AKilledSimulationResumesToTheModelOfAnUninterruptedRun) {
  REQUIRE_DATA();
  const std::string dir = Workdir("resume");
  const std::vector<std::string> job = {Example("digits.yaml"),
                                        "--set",
                                        "training.rounds=40",
                                        "--set",
                                        "training.local_epochs=20",
                                        "--set",
                                        "strategy.name=fedadam",
                                        "--threads",
                                        "1"};
  std::string flags;
  for (const std::string& a : job) flags += " " + a;
  Output whole = Fedsilo("run" + flags + " --quiet --json --workdir " + dir + "/whole");
  ASSERT_EQ(whole.status, 0) << whole.err;
  auto uninterrupted = fedsilo::ReadModelStateFile(LastJson(whole.out)["final_model"]);
  ASSERT_TRUE(uninterrupted.ok()) << uninterrupted.status();

  // Killed, like a machine that goes down, once it has printed round 3.
  std::vector<std::string> args = {"fedsilo", "run"};
  args.insert(args.end(), job.begin(), job.end());
  args.insert(args.end(), {"--workdir", dir + "/killed"});
  const std::string log = dir + "/killed.log";
  auto pid = fedsilo::SpawnProcess(fedsilo::testing_util::FedsiloBinary(), args, log);
  ASSERT_TRUE(pid.ok()) << pid.status();
  const bool round_3 = WaitForText(log, "round  3/40");
  fedsilo::StopProcess(*pid, SIGKILL, std::chrono::milliseconds(0));
  const std::string printed = ReadAll(log);
  ASSERT_TRUE(round_3) << printed;
  ASSERT_THAT(printed, Not(HasSubstr("round 40/40")));
  std::smatch run_id;
  ASSERT_TRUE(std::regex_search(printed, run_id, std::regex("fedsilo: run (\\S+)")));

  Output resumed =
      Fedsilo("run --resume " + run_id[1].str() + " --json --workdir " + dir + "/killed");
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_THAT(resumed.out, HasSubstr("fedsilo: resuming run " + run_id[1].str() + " after round"));
  EXPECT_THAT(resumed.out, Not(HasSubstr("round  1/40")));
  const nlohmann::json summary = LastJson(resumed.out);
  EXPECT_EQ(summary["run_id"], run_id[1].str());
  EXPECT_EQ(summary["rounds_completed"], 40);
  auto final_model = fedsilo::ReadModelStateFile(summary["final_model"]);
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  ASSERT_EQ(final_model->state.size(), uninterrupted->state.size());
  for (size_t t = 0; t < final_model->state.size(); ++t) {
    const auto a = final_model->state.tensors()[t].floats();
    const auto b = uninterrupted->state.tensors()[t].floats();
    ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end()))
        << final_model->state.tensors()[t].name() << " differs from the uninterrupted run's";
  }
  // One run on record, done, each of its rounds once.
  Output list = Fedsilo("runs list --json --workdir " + dir + "/killed");
  ASSERT_EQ(list.status, 0) << list.err;
  const nlohmann::json runs = nlohmann::json::parse(list.out);
  ASSERT_EQ(runs.size(), 1u) << list.out;
  EXPECT_EQ(runs[0]["state"], "done");
  EXPECT_EQ(runs[0]["rounds_completed"], 40);
  Output shown = Fedsilo("runs show " + run_id[1].str() + " --json --workdir " + dir + "/killed");
  ASSERT_EQ(shown.status, 0) << shown.err;
  for (const std::string round : {"round 1/40 done", "round 40/40 done"}) {
    const size_t first = shown.out.find(round);
    EXPECT_NE(first, std::string::npos) << round;
    EXPECT_EQ(shown.out.find(round, first + 1), std::string::npos) << round << " twice";
  }

  // What cannot be resumed is refused, with the reason.
  Output again = Fedsilo("run --resume " + run_id[1].str() + " --workdir " + dir + "/killed");
  EXPECT_EQ(again.status, 2);
  EXPECT_THAT(again.err, HasSubstr("is done (40 of 40 rounds); nothing to resume"));
  Output unknown = Fedsilo("run --resume digits-nope --workdir " + dir + "/killed");
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, HasSubstr("no run or job 'digits-nope'"));
  Output both = Fedsilo("run " + Example("digits.yaml") + " --resume " + run_id[1].str() +
                        " --workdir " + dir + "/killed");
  EXPECT_EQ(both.status, 2);
  EXPECT_THAT(both.err, HasSubstr("--resume goes on with the run's recorded job"));

  // Runs that failed on their data before round 1: one goes on once its
  // data is there; a SCAFFOLD one is refused (its silos' state would be lost).
  for (const std::string strategy : {"fedavg", "scaffold"}) {
    const std::string work = dir + "/" + strategy;
    Output failed = Fedsilo("run " + Example("digits.yaml") + " --set strategy.name=" + strategy +
                            " --set training.rounds=2 --quiet --data-dir " + dir +
                            "/no-data --workdir " + work);
    ASSERT_NE(failed.status, 0) << strategy;
    const nlohmann::json listed =
        nlohmann::json::parse(Fedsilo("runs list --json --workdir " + work).out);
    ASSERT_EQ(listed.size(), 1u) << strategy;
    EXPECT_EQ(listed[0]["state"], "failed") << strategy;
    Output resumed = Fedsilo("run --resume " + listed[0]["run_id"].get<std::string>() +
                             " --quiet --json --workdir " + work);
    if (strategy == "scaffold") {
      EXPECT_EQ(resumed.status, 2);
      EXPECT_THAT(resumed.err, HasSubstr("uses strategy scaffold, whose simulated silos kept their "
                                         "control variates in the process that stopped"));
    } else {
      ASSERT_EQ(resumed.status, 0) << resumed.err;
      EXPECT_EQ(LastJson(resumed.out)["rounds_completed"], 2);
    }
  }
}

// The processes of this machine whose command line mentions `text`.
int ProcessesMentioning(const std::string& text) {
  int found = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (ReadAll((entry.path() / "cmdline").string()).find(text) != std::string::npos) ++found;
  }
  return found;
}

// `run --processes` killed: its silo processes go with it, and the run goes
// on with --processes and a federation provisioned afresh.
TEST(CliTest, AKilledProcessesRunLeavesNoSiloBehindAndResumesWithProcesses) {
  REQUIRE_DATA();
  const std::string dir = Workdir("resume_processes");
  const std::vector<std::string> args = {"fedsilo",
                                         "run",
                                         Example("digits.yaml"),
                                         "--set",
                                         "training.rounds=30",
                                         "--set",
                                         "training.local_epochs=20",
                                         "--threads",
                                         "1",
                                         "--processes",
                                         "--workdir",
                                         dir + "/work"};
  const std::string log = dir + "/killed.log";
  auto pid = fedsilo::SpawnProcess(fedsilo::testing_util::FedsiloBinary(), args, log);
  ASSERT_TRUE(pid.ok()) << pid.status();
  const bool round_3 = WaitForText(log, "round  3/30");
  const int silos = ProcessesMentioning(dir + "/work/runs/");
  fedsilo::StopProcess(*pid, SIGKILL, std::chrono::milliseconds(0));
  const std::string printed = ReadAll(log);
  ASSERT_TRUE(round_3) << printed;
  ASSERT_GT(silos, 0) << "no silo process ran";
  ASSERT_THAT(printed, Not(HasSubstr("round 30/30")));
  EXPECT_TRUE(WaitUntil([&] { return ProcessesMentioning(dir + "/work/runs/") == 0; },
                        std::chrono::seconds(10)))
      << "silo processes outlived the run that started them";

  std::smatch run_id;
  ASSERT_TRUE(std::regex_search(printed, run_id, std::regex("fedsilo: run (\\S+)")));
  Output resumed = Fedsilo("run --resume " + run_id[1].str() +
                           " --processes --threads 1 --quiet --json --workdir " + dir + "/work");
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_EQ(LastJson(resumed.out)["rounds_completed"], 30);
  EXPECT_EQ(ProcessesMentioning(dir + "/work/runs/"), 0);
}

// Local DP-SGD with a target epsilon: every silo solves its noise for the
// whole job and reports what it has spent after each round, ending at or just
// under the target; the model still learns.
TEST(CliTest, LocalDpSpendsUpToTheTargetEpsilon) {
  REQUIRE_DATA();
  const std::string workdir = Workdir("dp");
  Output r = Fedsilo("run " + Example("digits.yaml") +
                     " --set training.rounds=8 --set privacy.dp.mode=local"
                     " --set privacy.dp.target_epsilon=4 --json --quiet --workdir " +
                     workdir);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  nlohmann::json summary = LastJson(r.out);
  EXPECT_GT(summary["final"]["accuracy"].get<double>(), 0.3);
  std::ifstream metrics(summary["run_dir"].get<std::string>() + "/metrics.jsonl");
  std::map<std::string, std::map<int, double>> epsilon;  // silo -> round -> epsilon
  for (std::string line; std::getline(metrics, line);) {
    nlohmann::json m = nlohmann::json::parse(line);
    const std::string name = m["name"];
    if (name.size() > 8 && name.substr(name.size() - 8) == "/epsilon") {
      epsilon[m["source"]][m["round"]] = m["value"];
    }
  }
  ASSERT_EQ(epsilon.size(), 5u);
  for (const auto& [silo, by_round] : epsilon) {
    ASSERT_EQ(by_round.size(), 8u) << silo;
    for (int round = 2; round <= 8; ++round) {
      EXPECT_GT(by_round.at(round), by_round.at(round - 1)) << silo;
    }
    EXPECT_LE(by_round.at(8), 4.0) << silo;
    EXPECT_GE(by_round.at(8), 4.0 - 0.05) << silo;
  }

  Output both = Fedsilo("run " + Example("digits.yaml") +
                        " --set privacy.dp.mode=local --set privacy.dp.target_epsilon=4"
                        " --set privacy.dp.noise_multiplier=1 --workdir " +
                        workdir);
  EXPECT_EQ(both.status, 2);
  EXPECT_THAT(both.err, HasSubstr("exactly one of noise_multiplier and target_epsilon"));
}

// The silos' own policy: a job without DP is refused, a DP job is admitted
// and recorded, and a job that would overrun the budget is refused and
// spends nothing. `fedsilo silo ledger` shows the record.
TEST(CliTest, SiloPolicyRefusesAndTheLedgerRecords) {
  REQUIRE_DATA();
  const std::string dir = Workdir("policy");
  std::ofstream(dir + "/policy.yaml")
      << "datasets:\n  digits: {max_epsilon: 5, delta: 1e-5, allow_non_dp: false}\n";
  const std::string base = "run " + Example("digits.yaml") + " --set training.rounds=3 --quiet" +
                           " --silo-policy " + dir + "/policy.yaml --workdir " + dir;
  const std::string dp = " --set privacy.dp.mode=local --set privacy.dp.target_epsilon=3";

  Output plain = Fedsilo(base);
  EXPECT_EQ(plain.status, 1);
  EXPECT_THAT(plain.err,
              HasSubstr("silo policy for dataset 'digits': only differentially private"));
  const std::string ledger = dir + "/silos/silo-2/privacy-ledger.json";
  EXPECT_FALSE(fs::exists(ledger));  // a refused job spends nothing

  Output first = Fedsilo(base + dp + " --json");
  ASSERT_EQ(first.status, 0) << first.err;
  ASSERT_TRUE(fs::exists(ledger));

  // Runs compose by RDP: a second job of epsilon 3 fits in silo-2's budget
  // of 5, a third does not, and is refused without a trace in its ledger.
  Output second = Fedsilo(base + dp);
  ASSERT_EQ(second.status, 0) << second.err;
  std::stringstream before;
  before << std::ifstream(ledger).rdbuf();
  // (Every silo must answer, so that silo-2's refusal fails the run.)
  Output third = Fedsilo(base + dp + " --set federation.min_silos=5");
  EXPECT_EQ(third.status, 1);
  EXPECT_THAT(third.err, HasSubstr("is spent or reserved already"));
  EXPECT_THAT(third.err, HasSubstr("by RDP composition, past the budget (max_epsilon)"));
  std::stringstream after;
  after << std::ifstream(ledger).rdbuf();
  EXPECT_EQ(before.str(), after.str());

  std::ofstream(dir + "/federation.yaml")
      << "name: t\nparticipants:\n  - {name: silo-2, kind: silo}\n";
  ASSERT_EQ(Fedsilo("provision " + dir + "/federation.yaml --out " + dir + "/kits").status, 0);
  Output shown = Fedsilo("silo ledger --kit " + dir + "/kits/silo-2 --state-dir " + dir +
                         "/silos/silo-2 --json");
  ASSERT_EQ(shown.status, 0) << shown.err;
  nlohmann::json j = LastJson(shown.out);
  ASSERT_EQ(j["entries"].size(), 2u);
  EXPECT_EQ(j["entries"][0]["dataset"], "digits");
  EXPECT_EQ(j["entries"][0]["run_id"], LastJson(first.out)["run_id"]);
  EXPECT_LE(j["entries"][0]["epsilon"].get<double>(), 3.0);
  EXPECT_GT(j["entries"][0]["epsilon"].get<double>(), 2.9);
  // Every step the job planned was charged.
  EXPECT_EQ(j["entries"][0]["dp"]["steps"], j["entries"][0]["dp"]["planned_steps"]);
  const nlohmann::json& digits = j["datasets"]["digits"];
  EXPECT_EQ(digits["composition"], "RDP");
  EXPECT_GT(digits["epsilon"].get<double>(), 3.0);
  EXPECT_LT(digits["epsilon"].get<double>(), 5.0);
  EXPECT_LT(digits["epsilon"].get<double>(),
            j["entries"][0]["epsilon"].get<double>() + j["entries"][1]["epsilon"].get<double>());
}

std::string FileBytes(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path, std::ios::binary).rdbuf();
  return s.str();
}

TEST(CliTest, EncryptionAtRestSealsModelsAndLedgersAndCatchesTampering) {
  REQUIRE_DATA();
  const std::string dir = Workdir("at-rest");
  const std::string ring = dir + "/ring.yaml";
  ASSERT_EQ(Fedsilo("keys new " + ring).status, 0);
  EXPECT_EQ(Fedsilo("keys new " + ring).status, 2);  // never replaced
  std::ofstream(dir + "/policy.yaml") << "datasets:\n  digits: {allow_non_dp: true}\n";
  Output run = Fedsilo("run " + Example("digits.yaml") +
                       " --set training.rounds=2 --quiet --json --storage-keys " + ring +
                       " --silo-policy " + dir + "/policy.yaml --workdir " + dir);
  ASSERT_EQ(run.status, 0) << run.err;
  const nlohmann::json summary = LastJson(run.out);
  const std::string model = summary["final_model"];
  const std::string ledger = dir + "/silos/silo-1/privacy-ledger.json";
  for (const std::string& f :
       {model, summary["run_dir"].get<std::string>() + "/checkpoints/round-0001.fsm", ledger}) {
    EXPECT_EQ(FileBytes(f).substr(0, 5), "FSEAL") << f;
  }

  const std::string run_dir = summary["run_dir"];
  EXPECT_EQ(FileBytes(run_dir + "/summary.json").substr(0, 5), "FSEAL");
  const std::string metrics = FileBytes(run_dir + "/metrics.jsonl");
  EXPECT_THAT(metrics, HasSubstr("{\"sealed\":\""));
  EXPECT_THAT(metrics, Not(HasSubstr("train_loss")));

  std::ofstream(dir + "/federation.yaml")
      << "name: t\nparticipants:\n  - {name: silo-1, kind: silo}\n";
  ASSERT_EQ(Fedsilo("provision " + dir + "/federation.yaml --out " + dir + "/kits").status, 0);
  const std::string show =
      "silo ledger --kit " + dir + "/kits/silo-1 --state-dir " + dir + "/silos/silo-1 --json";
  Output with_key = Fedsilo(show + " --storage-keys " + ring);
  ASSERT_EQ(with_key.status, 0) << with_key.err;
  EXPECT_EQ(LastJson(with_key.out)["entries"].size(), 1u);
  Output without = Fedsilo(show);
  EXPECT_EQ(without.status, 2);
  EXPECT_THAT(without.err, HasSubstr(ledger + ": the file is encrypted"));

  // Rotation re-encrypts under a new key; the ring still opens everything.
  Output rotated = Fedsilo("keys rotate " + ring + " " + dir + " --json");
  ASSERT_EQ(rotated.status, 0) << rotated.err;
  const nlohmann::json r = LastJson(rotated.out);
  EXPECT_GE(r["folders"][0]["reencrypted"].get<int>(), 4);  // final, 2 checkpoints, ledgers
  EXPECT_THAT(FileBytes(ledger), HasSubstr(r["current"].get<std::string>()));
  EXPECT_EQ(Fedsilo(show + " --storage-keys " + ring).status, 0);
  // The run store's values too, in one transaction.
  ASSERT_EQ(r["folders"][0]["stores"].size(), 1u);
  EXPECT_EQ(r["folders"][0]["stores"][0]["store"], dir + "/fedsilo.db");
  EXPECT_GT(r["folders"][0]["stores"][0]["values"].get<int>(), 10);
  EXPECT_EQ(Fedsilo("runs list --workdir " + dir + " --storage-keys " + ring).status, 0);

  // One flipped byte is caught, naming the file; nothing is shown.
  std::string bytes = FileBytes(ledger);
  bytes[bytes.size() / 2] ^= 0x20;
  std::ofstream(ledger, std::ios::binary | std::ios::trunc) << bytes;
  Output tampered = Fedsilo(show + " --storage-keys " + ring);
  EXPECT_EQ(tampered.status, 2);
  EXPECT_THAT(tampered.err, HasSubstr(ledger + ": encrypted file fails authentication"));
  EXPECT_EQ(tampered.out, "");
}

// federation.wait_for_silos with silo processes: silos that never connect
// (here each refuses its policy file at startup) fail the run once the wait
// is over, naming them, and the run is recorded as failed.
TEST(CliTest, SiloProcessesThatNeverConnectFailTheRunNamingThem) {
  REQUIRE_DATA();
  const std::string dir = Workdir("wait_for_silos");
  std::ofstream(dir + "/policy.yaml") << "datasets:\n  digits: {no_such_key: 1}\n";
  Output r = Fedsilo("run " + Example("digits.yaml") +
                     " --set training.rounds=2 --set federation.wait_for_silos=1 --processes"
                     " --quiet --silo-policy " +
                     dir + "/policy.yaml --workdir " + dir);
  EXPECT_EQ(r.status, 1) << r.err;
  const std::string named =
      "silos did not connect within 1 s (federation.wait_for_silos): silo-1, silo-2, silo-3, "
      "silo-4, silo-5 (see " +
      dir + "/runs/";
  EXPECT_THAT(r.err, HasSubstr(named));
  Output list = Fedsilo("runs list --json --workdir " + dir);
  ASSERT_EQ(list.status, 0) << list.err;
  const nlohmann::json runs = LastJson(list.out);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["state"], "failed");
  EXPECT_THAT(runs[0]["error"].get<std::string>(), HasSubstr("silo-1, silo-2, silo-3"));
}

// A key ring's life with silo processes (docs/encryption-at-rest.md): `run
// --processes` hands its ring to the silos it starts, whose ledgers are then
// sealed; the run's job.yaml is sealed whole; `keys show` lists the ring's
// ids; `keys rotate --retire` leaves the ring one key, which opens everything.
TEST(CliTest, SiloProcessesSealWithTheRunsRingAndARetiringRotationLeavesOneKey) {
  REQUIRE_DATA();
  const std::string dir = Workdir("ring-processes");
  const std::string ring = dir + "/ring.yaml";
  Output made = Fedsilo("keys new " + ring);
  ASSERT_EQ(made.status, 0) << made.err;
  auto show = [&] {
    Output shown = Fedsilo("keys show " + ring + " --json");
    EXPECT_EQ(shown.status, 0) << shown.err;
    return LastJson(shown.out);
  };
  const nlohmann::json new_ring = show();
  const std::string first = new_ring["current"];
  EXPECT_THAT(made.out, HasSubstr("(key '" + first + "', mode 0600)"));
  EXPECT_EQ(new_ring["keys"], nlohmann::json::array({first}));

  std::ofstream(dir + "/policy.yaml") << "datasets:\n  digits: {allow_non_dp: true}\n";
  Output run = Fedsilo("run " + Example("digits.yaml") +
                       " --set training.rounds=2 --processes --quiet --json --storage-keys " +
                       ring + " --silo-policy " + dir + "/policy.yaml --workdir " + dir);
  ASSERT_EQ(run.status, 0) << run.err;
  const nlohmann::json summary = LastJson(run.out);
  const std::string run_id = summary["run_id"];
  const std::string run_dir = summary["run_dir"];
  // Every file derived from the data, sealed under the ring's current key
  // (its id is in each sealed file's header).
  std::vector<std::string> sealed = {summary["final_model"],
                                     run_dir + "/checkpoints/round-0001.fsm", run_dir + "/job.yaml",
                                     run_dir + "/summary.json"};
  for (int s = 1; s <= 5; ++s) {
    sealed.push_back(dir + "/silos/silo-" + std::to_string(s) + "/privacy-ledger.json");
  }
  auto sealed_with = [&](const std::string& key, const std::string& old_key) {
    for (const std::string& f : sealed) {
      const std::string bytes = FileBytes(f);
      EXPECT_EQ(bytes.substr(0, 5), "FSEAL") << f;
      EXPECT_THAT(bytes, HasSubstr(key)) << f;
      if (!old_key.empty()) {
        EXPECT_THAT(bytes, Not(HasSubstr(old_key))) << f;
      }
    }
  };
  sealed_with(first, "");
  EXPECT_THAT(FileBytes(run_dir + "/job.yaml"), Not(HasSubstr("dataset")));

  // A rotation adds a key: show lists both, the new one current.
  const std::string backup = dir + "/ring-backup.yaml";
  fs::copy_file(ring, backup);
  fs::permissions(backup, fs::perms::owner_read | fs::perms::owner_write);
  Output rotated = Fedsilo("keys rotate " + ring + " " + dir + " --json");
  ASSERT_EQ(rotated.status, 0) << rotated.err;
  const std::string second = LastJson(rotated.out)["current"];
  Output listed = Fedsilo("keys show " + ring);
  ASSERT_EQ(listed.status, 0) << listed.err;
  EXPECT_EQ(listed.out, first < second ? first + "\n" + second + "  (current)\n"
                                       : second + "  (current)\n" + first + "\n");

  // --retire: re-sealed with a third key, the only one left.
  Output retired = Fedsilo("keys rotate " + ring + " " + dir + " --retire --json");
  ASSERT_EQ(retired.status, 0) << retired.err;
  EXPECT_EQ(LastJson(retired.out)["retired"], true);
  const std::string third = LastJson(retired.out)["current"];
  EXPECT_EQ(show(), nlohmann::json({{"current", third}, {"keys", {third}}}));
  EXPECT_THAT(FileBytes(ring), Not(HasSubstr(first)));
  EXPECT_THAT(FileBytes(ring), Not(HasSubstr(second)));
  sealed_with(third, first);
  sealed_with(third, second);

  // Everything opens with the one key left: the silos' ledgers and audit
  // logs, the run's model and checkpoint, the run store.
  const std::string keys = " --storage-keys " + ring;
  for (const std::string silo : {"silo-1", "silo-5"}) {
    Output ledger = Fedsilo("silo ledger --kit " + run_dir + "/kits/" + silo + " --state-dir " +
                            dir + "/silos/" + silo + " --json" + keys);
    ASSERT_EQ(ledger.status, 0) << silo << ledger.err;
    ASSERT_EQ(LastJson(ledger.out)["entries"].size(), 1u) << silo;
    EXPECT_EQ(LastJson(ledger.out)["entries"][0]["run_id"], run_id) << silo;
    Output audit = Fedsilo("audit verify " + dir + "/silos/" + silo + "/audit.log --json" + keys);
    ASSERT_EQ(audit.status, 0) << silo << audit.err;
    EXPECT_EQ(LastJson(audit.out)["intact"], true) << silo;
    EXPECT_EQ(LastJson(audit.out)["keyed"], true) << silo;
  }
  const std::string w = " --workdir " + dir;
  for (const std::string& c : {"export " + run_id + " --out " + dir + "/final.fsm" + w,
                               "export " + run_id + " --round 1 --out " + dir + "/round1.fsm" + w,
                               "runs show " + run_id + w}) {
    Output opened = Fedsilo(c + keys);
    EXPECT_EQ(opened.status, 0) << c << "\n" << opened.err;
  }
  auto exported = fedsilo::ReadModelStateFile(dir + "/final.fsm");
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(exported->metadata.at("round"), "2");
  // The copy of the ring kept from before opens none of it any more.
  Output stale =
      Fedsilo("export " + run_id + " --out " + dir + "/stale.fsm --storage-keys " + backup + w);
  EXPECT_EQ(stale.status, 2);
  EXPECT_THAT(stale.err, HasSubstr("which this key ring does not hold"));
}

// A work folder used without a key ring, encrypted afterwards: its files and
// its run store are sealed, and read only with the ring from then on.
TEST(CliTest, SealExistingEncryptsAFolderStartedWithoutKeysStoreIncluded) {
  REQUIRE_DATA();
  const std::string dir = Workdir("seal-existing");
  Output run = Fedsilo("run " + Example("digits.yaml") +
                       " --set training.rounds=2 --quiet --json --workdir " + dir);
  ASSERT_EQ(run.status, 0) << run.err;
  const nlohmann::json summary = LastJson(run.out);
  const std::string run_id = summary["run_id"];
  const std::string model = summary["final_model"];
  ASSERT_NE(FileBytes(model).substr(0, 5), "FSEAL");
  const std::string ring = dir + "/secrets/ring.yaml";
  ASSERT_EQ(Fedsilo("keys new " + ring).status, 0);

  // Meanwhile a ring configured for the folder refuses its plain files.
  Output refused = Fedsilo("runs list --workdir " + dir + " --storage-keys " + ring);
  EXPECT_EQ(refused.status, 2);
  EXPECT_THAT(refused.err, HasSubstr(dir + "/fedsilo.db: the job store is not encrypted"));
  EXPECT_THAT(refused.err, HasSubstr("keys seal-existing"));

  Output sealed = Fedsilo("keys seal-existing " + dir + " --storage-keys " + ring + " --json");
  ASSERT_EQ(sealed.status, 0) << sealed.err;
  const nlohmann::json report = LastJson(sealed.out);
  EXPECT_GE(report["folders"][0]["encrypted"].get<int>(), 3);
  ASSERT_EQ(report["folders"][0]["stores"].size(), 1u);
  EXPECT_GT(report["folders"][0]["stores"][0]["values"].get<int>(), 10);
  EXPECT_EQ(FileBytes(model).substr(0, 5), "FSEAL");

  for (const std::string& c : {std::string("runs list"), "runs show " + run_id}) {
    Output without = Fedsilo(c + " --workdir " + dir);
    EXPECT_EQ(without.status, 2) << c;
    EXPECT_THAT(without.err, HasSubstr("fedsilo.db: the job store is encrypted")) << c;
    Output with = Fedsilo(c + " --workdir " + dir + " --storage-keys " + ring);
    EXPECT_EQ(with.status, 0) << c << with.err;
    EXPECT_THAT(with.out, HasSubstr(run_id.substr(0, 12))) << c;
  }
  // A second run in the sealed folder goes on in the encrypted store.
  Output again = Fedsilo("run " + Example("digits.yaml") + " --set training.rounds=1 --quiet " +
                         "--json --workdir " + dir + " --storage-keys " + ring);
  ASSERT_EQ(again.status, 0) << again.err;
  Output listed = Fedsilo("runs list --workdir " + dir + " --storage-keys " + ring);
  EXPECT_THAT(listed.out,
              HasSubstr(LastJson(again.out)["run_id"].get<std::string>().substr(0, 12)));
}

// Every strategy runs on the small examples with its default settings and
// learns (MNIST examples: docs/strategies.md).
TEST(CliTest, EveryStrategyRunsOnTheExamplesWithItsDefaults) {
  REQUIRE_DATA();
  const std::string dir = Workdir("strategies");
  for (const char* example : {"digits.yaml", "breast-cancer.yaml"}) {
    for (const fedsilo::StrategyTraits& traits : fedsilo::kStrategies) {
      const absl::string_view strategy = traits.name;
      Output r =
          Fedsilo("run " + Example(example) + " --set strategy.name=" + std::string(strategy) +
                  " --quiet --json --workdir " + dir);
      ASSERT_EQ(r.status, 0) << example << " " << strategy << ": " << r.err;
      EXPECT_GT(LastJson(r.out)["final"]["accuracy"].get<double>(), 0.85)
          << example << " " << strategy;
    }
  }
}

// Two hostile silos of ten: FedAvg collapses; median, trimmed mean and Krum
// stay within a few points of the clean run.
TEST(CliTest, RobustStrategiesWithstandTwoHostileSilosOfTen) {
  REQUIRE_DATA();
  const std::string dir = Workdir("robust");
  auto accuracy = [&](const std::string& strategy, const std::string& attack) {
    Output r = Fedsilo("run " + Example("digits.yaml") +
                       " --set data.partition=iid --set federation.silos=10"
                       " --set strategy.byzantine=2 --set strategy.trim_fraction=0.2"
                       " --set strategy.name=" +
                       strategy + attack + " --quiet --json --workdir " + dir);
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? LastJson(r.out)["final"]["accuracy"].get<double>() : -1.0;
  };
  const double clean = accuracy("fedavg", "");
  ASSERT_GT(clean, 0.9);
  for (const std::string attack :
       {" --attack sign_flip --attackers 2", " --attack noise --attackers 2"}) {
    EXPECT_LT(accuracy("fedavg", attack), 0.3) << attack;
    for (const char* robust : {"median", "trimmed_mean", "krum"}) {
      EXPECT_GT(accuracy(robust, attack), clean - 0.06) << robust << attack;
    }
  }
  // Bad flags are refused before anything is written.
  const std::string untouched = Workdir("attack_flags");
  Output both = Fedsilo("run " + Example("digits.yaml") +
                        " --attack sign_flip --processes --workdir " + untouched);
  EXPECT_EQ(both.status, 2);
  EXPECT_THAT(both.err, HasSubstr("--attack and --attackers go together"));
  EXPECT_TRUE(fs::is_empty(untouched));
}

TEST(CliTest, SameSeedGivesTheSameModelBytesAtAnyThreadCount) {
  REQUIRE_DATA();
  const std::string workdir = Workdir("repro");
  std::vector<std::string> models;
  for (const char* threads : {"1", "2", "2"}) {
    Output r = Fedsilo("run " + Example("digits.yaml") + " --set training.rounds=3 --quiet --json" +
                       " --threads " + threads + " --workdir " + workdir);
    ASSERT_EQ(r.status, 0) << r.err;
    std::stringstream bytes;
    bytes << std::ifstream(LastJson(r.out)["final_model"].get<std::string>(), std::ios::binary)
                 .rdbuf();
    models.push_back(bytes.str());
  }
  EXPECT_TRUE(models[0] == models[1]) << "1 thread and 2 threads differ";
  EXPECT_TRUE(models[1] == models[2]) << "two runs with 2 threads differ";
  Output other =
      Fedsilo("run " + Example("digits.yaml") +
              " --set training.rounds=3 --set seed=43 --quiet --json --workdir " + workdir);
  ASSERT_EQ(other.status, 0);
  std::stringstream bytes;
  bytes << std::ifstream(LastJson(other.out)["final_model"].get<std::string>(), std::ios::binary)
               .rdbuf();
  EXPECT_FALSE(bytes.str() == models[0]) << "another seed gave the same model";
}

TEST(CliTest, BreastCancerReportsBinaryMetrics) {
  REQUIRE_DATA();
  Output r = Fedsilo("run " + Example("breast-cancer.yaml") + " --json --workdir " + Workdir("bc"));
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json final_metrics = LastJson(r.out)["final"];
  EXPECT_GT(final_metrics["accuracy"].get<double>(), 0.9);
  EXPECT_GT(final_metrics["auc"].get<double>(), 0.95);
  EXPECT_GT(final_metrics["precision"].get<double>(), 0.85);
  EXPECT_GT(final_metrics["recall"].get<double>(), 0.85);
}

TEST(CliTest, InvalidJobsExitWithStatusTwoAndNameTheKey) {
  const std::string dir = Workdir("invalid");
  const std::string job = dir + "/job.yaml";
  std::ofstream(job) << "data: {dataset: digits}\nfederation: {silos: 2}\ntraining:\n  rouns: 3\n";
  Output typo = Fedsilo("run " + job + " --workdir " + dir);
  EXPECT_EQ(typo.status, 2);
  EXPECT_THAT(typo.err, HasSubstr("job.yaml:4: unknown key 'training.rouns' (did you mean "
                                  "'training.rounds'?)"));
  EXPECT_FALSE(fs::exists(dir + "/runs"));  // nothing started

  Output range = Fedsilo("run " + Example("digits.yaml") + " --set training.batch_size=0");
  EXPECT_EQ(range.status, 2);
  EXPECT_THAT(range.err,
              HasSubstr("--set training.batch_size: must be an integer in [1, 1000000]"));

  Output missing = Fedsilo("run " + dir + "/nope.yaml");
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, HasSubstr("nope.yaml: no such file"));

  Output bad_flag = Fedsilo("run " + Example("digits.yaml") + " --threads 0");
  EXPECT_EQ(bad_flag.status, 2);

  Output no_command = Fedsilo("");
  EXPECT_EQ(no_command.status, 2);

  Output validate = Fedsilo("validate " + job);
  EXPECT_EQ(validate.status, 2);
  Output valid = Fedsilo("validate " + Example("mnist-2nn.yaml"));
  EXPECT_EQ(valid.status, 0) << valid.err;
  EXPECT_THAT(valid.out, HasSubstr("valid (mnist, 10 silos, mlp, "));
}

// The value at a dotted path of a YAML mapping, as text: a scalar as it is,
// a sequence as "[a, b]"; "(missing)" when there is none.
std::string YamlAt(const YAML::Node& node, const std::string& path) {
  const size_t dot = path.find('.');
  const YAML::Node child = node[path.substr(0, dot)];
  if (!child) return "(missing)";
  if (dot != std::string::npos) return YamlAt(child, path.substr(dot + 1));
  if (child.IsScalar()) return child.Scalar();
  if (!child.IsSequence()) return "(a mapping)";
  std::string out = "[";
  for (size_t i = 0; i < child.size(); ++i) {
    out += (i > 0 ? ", " : "") + child[i].Scalar();
  }
  return out + "]";
}

// `fedsilo validate JOB --print` shows the resolved job: every key of the
// job file reference (docs/job-reference.md) that applies to the job, each
// default filled in, and it reads back as the same job.
TEST(CliTest, ValidatePrintShowsEveryResolvedKeyWithItsDefault) {
  const std::string dir = Workdir("validate_print");
  std::ofstream(dir + "/minimal.yaml") << "data: {dataset: digits}\nfederation: {silos: 7}\n";
  // The defaults of docs/job-reference.md, as the job states them.
  const std::vector<std::pair<std::string, std::string>> defaults = {
      {"name", "minimal"},  // the file name without .yaml
      {"experiment", "default"},
      {"seed", "0"},
      {"data.test_fraction", "0.2"},
      {"data.silo_test_fraction", "0.1"},
      {"data.partition", "iid"},
      {"data.alpha", "0.5"},
      {"data.shards_per_silo", "2"},
      {"model.name", "mlp"},
      {"model.hidden", "[200, 200]"},
      {"training.rounds", "10"},
      {"training.local_epochs", "1"},
      {"training.batch_size", "32"},
      {"training.optimizer", "sgd"},
      {"training.learning_rate", "0.01"},
      {"training.momentum", "0"},
      {"training.weight_decay", "0"},
      {"training.lr_decay", "1"},
      {"federation.silos", "[silo-1, silo-2, silo-3, silo-4, silo-5, silo-6, silo-7]"},
      {"federation.fraction", "1"},
      {"federation.min_silos", "1"},
      {"federation.wait_for_silos", "120"},
      {"federation.round_retries", "2"},
      {"federation.round_timeout", "600"},
      {"strategy.name", "fedavg"},
      {"strategy.server_learning_rate", "1"},
      {"strategy.server_momentum", "0.9"},
      {"strategy.beta1", "0.9"},
      {"strategy.beta2", "0.99"},
      {"strategy.tau", "0.001"},
      {"strategy.proximal_mu", "0.01"},
      {"strategy.trim_fraction", "0.1"},
      {"strategy.byzantine", "2"},  // (7 - 3) / 2
      {"strategy.multi_krum_keep", "0"},
      {"strategy.max_update_norm", "0"},
      {"privacy.dp.mode", "none"},
      {"privacy.dp.noise_multiplier", "0"},
      {"privacy.dp.target_epsilon", "0"},
      {"privacy.dp.max_grad_norm", "1"},
      {"privacy.dp.delta", "1e-05"},
      {"privacy.dp.clip_norm", "1"},
      {"privacy.dp.adaptive_clipping", "false"},
      {"privacy.dp.target_quantile", "0.5"},
      {"privacy.dp.clip_learning_rate", "0.2"},
      {"privacy.secure_aggregation.enabled", "false"},
      {"privacy.secure_aggregation.threshold", "0"},
      {"privacy.secure_aggregation.clip_range", "4"},
      {"privacy.secure_aggregation.bits", "24"},
      {"privacy.secure_aggregation.max_weight", "100000"},
      {"checkpoint.every", "1"},
  };
  // Numbers compare as numbers ("1e+05" is 100000).
  auto same = [](const std::string& got, const std::string& want) {
    char* end = nullptr;
    const double g = std::strtod(got.c_str(), &end);
    if (got.empty() || *end != '\0') return got == want;
    return g == std::strtod(want.c_str(), nullptr);
  };
  Output printed = Fedsilo("validate " + dir + "/minimal.yaml --print");
  ASSERT_EQ(printed.status, 0) << printed.err;
  const YAML::Node resolved = YAML::Load(printed.out);
  for (const auto& [key, value] : defaults) {
    EXPECT_PRED2(same, YamlAt(resolved, key), value) << key << " in\n" << printed.out;
  }
  fedsilo::StatusOr<fedsilo::JobConfig> again = fedsilo::ParseJobConfig(printed.out, "printed");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(fedsilo::JobConfigToYaml(*again), printed.out);

  // MLflow's keys apply once there is a server to send the run to.
  Output tracked = Fedsilo("validate " + dir +
                           "/minimal.yaml --set tracking.mlflow.uri=http://127.0.0.1:5000 --print");
  ASSERT_EQ(tracked.status, 0) << tracked.err;
  const YAML::Node with_mlflow = YAML::Load(tracked.out);
  EXPECT_EQ(YamlAt(with_mlflow, "tracking.mlflow.uri"), "http://127.0.0.1:5000");
  // Not checked, as they are not printed: tracking.mlflow.experiment when not
  // given (it follows the job's experiment), and for a CSV job without a
  // preprocess section, preprocess.scale (none).
  EXPECT_EQ(YamlAt(with_mlflow, "tracking.mlflow.log_model"), "true");
  EXPECT_EQ(YamlAt(with_mlflow, "tracking.mlflow.wait"), "30");
}

TEST(CliTest, MissingDataIsInvalidInputNamingTheFile) {
  Output r = Fedsilo("run " + Example("digits.yaml") + " --workdir " + Workdir("nodata"),
                     "FEDSILO_DATA=/nonexistent-fedsilo-data");
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent-fedsilo-data/sklearn/digits.csv.gz: no such file"));
  EXPECT_THAT(r.err, HasSubstr("scripts/setup"));
}

TEST(CliTest, ModelThatDoesNotFitTheDataIsInvalidInput) {
  REQUIRE_DATA();
  Output r = Fedsilo("run " + Example("breast-cancer.yaml") + " --set model.name=cnn --workdir " +
                     Workdir("cnn_bc"));
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("model.name: cnn needs image data"));
}

TEST(CliTest, ProvisionCreatesVerifiableKitsAndNeverOverwrites) {
  const std::string dir = Workdir("provision");
  std::ofstream(dir + "/federation.yaml")
      << "name: banks\norchestrator: {hosts: [localhost, 127.0.0.1], port: 9000}\n"
         "participants:\n  - {name: bank-a, kind: silo}\n  - {name: carol, kind: user}\n";
  Output r = Fedsilo("provision " + dir + "/federation.yaml --out " + dir + "/kits");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(dir + "/kits/bank-a  (silo)"));
  for (const char* kit : {"orchestrator", "bank-a", "carol"}) {
    EXPECT_TRUE(fs::exists(dir + "/kits/" + kit + "/kit.yaml")) << kit;
    EXPECT_EQ(fs::status(dir + "/kits/" + kit + "/" + kit + ".key").permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write)
        << kit;
  }
  // The certificates verify with the stock openssl tool against the CA.
  const std::string verify = "openssl verify -CAfile " + dir + "/kits/ca/ca.crt " + dir +
                             "/kits/bank-a/bank-a.crt " + dir +
                             "/kits/orchestrator/orchestrator.crt";
  EXPECT_EQ(std::system((verify + " >/dev/null").c_str()), 0);

  Output again = Fedsilo("provision " + dir + "/federation.yaml --out " + dir + "/kits");
  EXPECT_EQ(again.status, 2);
  EXPECT_THAT(again.err, HasSubstr("already exists"));

  Output added = Fedsilo("provision add-silo bank-b --days 30 --out " + dir + "/kits");
  ASSERT_EQ(added.status, 0) << added.err;
  EXPECT_EQ(std::system(("openssl verify -CAfile " + dir + "/kits/ca/ca.crt " + dir +
                         "/kits/bank-b/bank-b.crt >/dev/null")
                            .c_str()),
            0);
  Output bad = Fedsilo("provision " + dir + "/missing.yaml --out " + dir + "/kits2");
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.err, HasSubstr("missing.yaml: no such file"));

  // Revocation: the CRL verifies with the stock openssl tool, and with it
  // the revoked certificate no longer does (the others still do).
  Output revoked = Fedsilo("provision revoke bank-b --out " + dir + "/kits");
  ASSERT_EQ(revoked.status, 0) << revoked.err;
  EXPECT_THAT(revoked.out, HasSubstr("revoked 'bank-b' (serial "));
  const std::string crl_check = "openssl verify -crl_check -CRLfile " + dir +
                                "/kits/ca/crl.pem -CAfile " + dir + "/kits/ca/ca.crt " + dir +
                                "/kits/";
  EXPECT_NE(std::system((crl_check + "bank-b/bank-b.crt >/dev/null 2>&1").c_str()), 0);
  EXPECT_EQ(std::system((crl_check + "bank-a/bank-a.crt >/dev/null").c_str()), 0);
  EXPECT_TRUE(fs::exists(dir + "/kits/orchestrator/crl.pem"));
  Output list = Fedsilo("provision list --out " + dir + "/kits");
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_THAT(list.out, ::testing::ContainsRegex("bank-a +silo +[0-9A-F]+ +[0-9-]+ +valid"));
  EXPECT_THAT(list.out, ::testing::ContainsRegex("bank-b +silo +[0-9A-F]+ +[0-9-]+ +revoked"));
  EXPECT_THAT(list.out, ::testing::ContainsRegex("carol +user "));
  Output twice = Fedsilo("provision revoke bank-b --out " + dir + "/kits");
  EXPECT_EQ(twice.status, 2);
  EXPECT_THAT(twice.err, HasSubstr("revoked already"));
  Output nobody = Fedsilo("provision revoke nobody --out " + dir + "/kits");
  EXPECT_EQ(nobody.status, 2);
  EXPECT_THAT(nobody.err, HasSubstr("no such kit"));
}

// The accountant from the command line; the figures are Opacus's
// (opacus/tests/accountants_test.py), as in src/privacy/rdp_accountant_test.cc.
TEST(CliTest, PrivacyEpsilonAndNoise) {
  Output eps = Fedsilo(
      "privacy epsilon --sample-rate 0.04 --noise-multiplier 1.5 --epochs 90 "
      "--delta 1e-5 --json");
  ASSERT_EQ(eps.status, 0) << eps.err;
  nlohmann::json e = LastJson(eps.out);
  EXPECT_NEAR(e["epsilon"].get<double>(), 7.32911117143, 1e-6);
  EXPECT_EQ(e["steps"], 2250);
  EXPECT_GT(e["order"].get<double>(), 1.0);

  Output noise = Fedsilo("privacy noise --sample-rate 0.04 --target-epsilon 8 --steps 2250 --json");
  ASSERT_EQ(noise.status, 0) << noise.err;
  nlohmann::json n = LastJson(noise.out);
  EXPECT_NEAR(n["noise_multiplier"].get<double>(), 1.425307617, 0.01 * 1.425307617);
  EXPECT_LE(n["epsilon"].get<double>(), 8.0);

  Output bad = Fedsilo("privacy epsilon --sample-rate 1.5 --noise-multiplier 1 --steps 10");
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.err, HasSubstr("--sample-rate 1.5"));
  Output neither = Fedsilo("privacy noise --sample-rate 0.1 --target-epsilon 1");
  EXPECT_EQ(neither.status, 2);
  EXPECT_THAT(neither.err, HasSubstr("--steps and --epochs"));
}

// `fedsilo run` records every run in <workdir>/fedsilo.db; `fedsilo runs`
// lists, shows, compares and exports them from there.
TEST(CliTest, RunsAreRecordedInTheStoreAndTheRunsCommandsReadThem) {
  REQUIRE_DATA();
  const std::string workdir = Workdir("runs");
  const std::string w = " --workdir " + workdir;
  Output a = Fedsilo("run " + Example("digits.yaml") +
                     " --set experiment=lr-sweep --set training.rounds=3 --quiet --json" + w);
  ASSERT_EQ(a.status, 0) << a.err;
  Output b = Fedsilo("run " + Example("digits.yaml") +
                     " --set experiment=lr-sweep --set training.rounds=2"
                     " --set training.learning_rate=0.02 --quiet --json" +
                     w);
  ASSERT_EQ(b.status, 0) << b.err;
  Output c =
      Fedsilo("run " + Example("digits.yaml") + " --set training.rounds=1 --quiet --json" + w);
  ASSERT_EQ(c.status, 0) << c.err;
  const nlohmann::json sa = LastJson(a.out), sb = LastJson(b.out);
  const std::string run_a = sa["run_id"], run_b = sb["run_id"];
  const std::string run_c = LastJson(c.out)["run_id"];
  EXPECT_TRUE(fs::exists(workdir + "/fedsilo.db"));

  Output list = Fedsilo("runs list" + w);
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(run_a));
  EXPECT_THAT(list.out, HasSubstr(run_c));
  EXPECT_THAT(list.out, HasSubstr("done"));
  EXPECT_THAT(list.out, HasSubstr("3/3"));
  Output sweep = Fedsilo("runs list --json --experiment lr-sweep" + w);
  ASSERT_EQ(sweep.status, 0) << sweep.err;
  nlohmann::json runs = LastJson(sweep.out);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0]["run_id"], run_a);
  EXPECT_EQ(runs[0]["experiment"], "lr-sweep");
  EXPECT_EQ(runs[0]["state"], "done");
  EXPECT_DOUBLE_EQ(runs[0]["final_metrics"]["global/test_accuracy"].get<double>(),
                   sa["final"]["accuracy"].get<double>());
  EXPECT_EQ(runs[1]["run_id"], run_b);

  // show, by a unique prefix of the run id: every round, every silo's part.
  Output show = Fedsilo("runs show --json " + run_a.substr(0, run_a.size() - 2) + w);
  ASSERT_EQ(show.status, 0) << show.err;
  nlohmann::json shown = LastJson(show.out);
  EXPECT_EQ(shown["run_id"], run_a);
  ASSERT_EQ(shown["rounds"].size(), 3u);
  EXPECT_DOUBLE_EQ(shown["rounds"][2]["metrics"]["global/test_accuracy"].get<double>(),
                   sa["final"]["accuracy"].get<double>());
  ASSERT_EQ(shown["silos"].size(), 5u);
  for (const auto& silo : shown["silos"]) {
    EXPECT_EQ(silo["state"], "ok") << silo;
    EXPECT_EQ(silo["rounds"], 3) << silo;
    EXPECT_GT(silo["examples"].get<int>(), 0) << silo;
  }
  EXPECT_FALSE(shown["events"].empty());
  Output table = Fedsilo("runs show " + run_a + w);
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("silo-5"));
  EXPECT_THAT(table.out, HasSubstr("global/test_accuracy"));

  // compare: the keys that differ, not the ones that agree.
  Output compare = Fedsilo("runs compare " + run_a + " " + run_b + w);
  ASSERT_EQ(compare.status, 0) << compare.err;
  EXPECT_THAT(compare.out, HasSubstr("training.learning_rate"));
  EXPECT_THAT(compare.out, HasSubstr("training.rounds"));
  EXPECT_THAT(compare.out, Not(HasSubstr("data.dataset")));
  EXPECT_THAT(compare.out, HasSubstr("global/test_accuracy"));
  Output compared = Fedsilo("runs compare " + run_a + " " + run_b + " --json" + w);
  ASSERT_EQ(compared.status, 0) << compared.err;
  const nlohmann::json both = LastJson(compared.out);
  ASSERT_TRUE(both.is_array() && both.size() == 2u) << compared.out;
  EXPECT_EQ(both[0]["run_id"], run_a);
  EXPECT_EQ(both[1]["run_id"], run_b);
  for (const auto& run : both) {
    EXPECT_EQ(run["state"], "done") << run;
    EXPECT_EQ(run["rounds_completed"], run["rounds_total"]) << run;
    EXPECT_TRUE(run["differing_keys"].contains("training.learning_rate")) << run;
    EXPECT_FALSE(run["differing_keys"].contains("data.dataset")) << run;
    EXPECT_TRUE(run["final_metrics"].contains("global/test_accuracy")) << run;
    EXPECT_GE(run["wall_seconds"].get<double>(), 0) << run;
  }
  EXPECT_NE(both[0]["differing_keys"]["training.learning_rate"],
            both[1]["differing_keys"]["training.learning_rate"]);

  // export: one CSV row per round, the values the run reported.
  const std::string csv_path = workdir + "/a.csv";
  Output exported = Fedsilo("runs export " + run_a + " --csv --out " + csv_path + w);
  ASSERT_EQ(exported.status, 0) << exported.err;
  std::ifstream csv(csv_path);
  std::string header;
  std::getline(csv, header);
  ASSERT_EQ(header.rfind("round,global/", 0), 0u) << header;
  EXPECT_THAT(header, HasSubstr("silo-1/train_loss"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2].rfind("3,", 0), 0u);

  // Bad names and folders are invalid input, named.
  Output unknown = Fedsilo("runs show no-such-run" + w);
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, HasSubstr("no run 'no-such-run'"));
  Output empty = Fedsilo("runs list --workdir " + Workdir("runs_empty"));
  EXPECT_EQ(empty.status, 2);
  EXPECT_THAT(empty.err, HasSubstr("no run store"));
  EXPECT_EQ(Fedsilo("runs compare " + run_a + w).status, 2);
}

// tracking.mlflow: the run goes to MLflow (here a stand-in for its REST API)
// as the silos' policies allow, and an unreachable MLflow fails nothing.
TEST(CliTest, RunsAreExportedToMlflowAsTheSilosPoliciesAllow) {
  REQUIRE_DATA();
  fedsilo::testing_util::FakeMlflow mlflow;
  const std::string dir = Workdir("mlflow");
  const std::string run =
      "run " + Example("digits.yaml") + " --set training.rounds=3 --quiet --json --workdir " + dir;
  const std::string to_mlflow = " --set tracking.mlflow.uri=" + mlflow.uri();

  Output plain = Fedsilo(run + to_mlflow + " --set experiment=mlflow-demo");
  ASSERT_EQ(plain.status, 0) << plain.err;
  const nlohmann::json summary = LastJson(plain.out);
  auto runs = mlflow.runs();
  ASSERT_EQ(runs.size(), 1u);
  const auto& exported = runs.begin()->second;
  EXPECT_EQ(exported.name, summary["run_id"]);
  EXPECT_EQ(exported.status, "FINISHED");
  EXPECT_EQ(exported.tags.at("fedsilo.run_id"), summary["run_id"]);
  EXPECT_EQ(exported.tags.at("fedsilo.job"), "digits");
  EXPECT_EQ(exported.tags.at("fedsilo.experiment"), "mlflow-demo");
  EXPECT_EQ(mlflow.experiments().count("mlflow-demo"), 1u);
  EXPECT_EQ(exported.params.at("training.rounds"), "3");
  EXPECT_EQ(exported.params.at("data.dataset"), "digits");
  std::map<int64_t, double> accuracy;  // step -> value
  int silo_losses = 0;
  for (const auto& m : exported.metrics) {
    if (m.key == "global/test_accuracy") accuracy[m.step] = m.value;
    if (m.key == "silo-1/train_loss") ++silo_losses;
  }
  ASSERT_EQ(accuracy.size(), 3u);
  EXPECT_EQ(accuracy.begin()->first, 1);
  EXPECT_DOUBLE_EQ(accuracy[3], summary["final"]["accuracy"].get<double>());
  EXPECT_EQ(silo_losses, 3);
  const auto artifacts = mlflow.artifacts();
  const std::string root = exported.experiment_id + "/" + exported.id + "/artifacts/";
  ASSERT_EQ(artifacts.count(root + "model/final_model.fsm"), 1u);
  EXPECT_EQ(artifacts.at(root + "model/final_model.fsm"), FileBytes(summary["final_model"]));
  EXPECT_EQ(artifacts.count(root + "job.yaml"), 1u);

  // A silo policy with export_metrics: false keeps the silos' metrics in the
  // federation's own store; only the global ones go out.
  std::ofstream(dir + "/policy.yaml") << "datasets:\n  digits: {export_metrics: false}\n";
  Output kept = Fedsilo(run + to_mlflow + " --silo-policy " + dir + "/policy.yaml");
  ASSERT_EQ(kept.status, 0) << kept.err;
  const std::string kept_id = LastJson(kept.out)["run_id"];
  runs = mlflow.runs();
  ASSERT_EQ(runs.size(), 2u);
  int global = 0;
  for (const auto& [id, r] : runs) {
    if (r.name != kept_id) continue;
    for (const auto& m : r.metrics) {
      EXPECT_EQ(m.key.rfind("global/", 0), 0u) << m.key;
      ++global;
    }
  }
  EXPECT_GT(global, 0);
  Output csv = Fedsilo("runs export " + kept_id + " --csv --workdir " + dir);
  ASSERT_EQ(csv.status, 0) << csv.err;
  EXPECT_THAT(csv.out, HasSubstr("silo-1/train_loss"));

  // tracking.mlflow.log_model: false sends the run, its params and metrics,
  // but no artifact: neither the model nor the job.
  const size_t artifacts_before = mlflow.artifacts().size();
  Output no_model = Fedsilo(run + to_mlflow + " --set tracking.mlflow.log_model=false");
  ASSERT_EQ(no_model.status, 0) << no_model.err;
  const std::string no_model_id = LastJson(no_model.out)["run_id"];
  runs = mlflow.runs();
  ASSERT_EQ(runs.size(), 3u);
  int sent = 0;
  for (const auto& [id, r] : runs) {
    if (r.name != no_model_id) continue;
    ++sent;
    EXPECT_EQ(r.status, "FINISHED");
    EXPECT_EQ(r.params.at("tracking.mlflow.log_model"), "false");
    EXPECT_FALSE(r.metrics.empty());
    for (const auto& [path, bytes] : mlflow.artifacts()) {
      EXPECT_THAT(path, Not(HasSubstr(r.experiment_id + "/" + id + "/"))) << path;
    }
  }
  EXPECT_EQ(sent, 1);
  EXPECT_EQ(mlflow.artifacts().size(), artifacts_before);

  // MLflow out of reach: the run finishes, with a warning saying what was not sent.
  std::string gone;
  {
    fedsilo::testing_util::FakeMlflow stopped;
    gone = stopped.uri();
  }
  Output down =
      Fedsilo(run + " --set tracking.mlflow.uri=" + gone + " --set tracking.mlflow.wait=1");
  ASSERT_EQ(down.status, 0) << down.err;
  EXPECT_THAT(down.err, HasSubstr("MLflow export to " + gone + " incomplete"));
  EXPECT_THAT(down.err, HasSubstr("training goes on"));

  Output bad = Fedsilo(run + " --set tracking.mlflow.uri=mlflow.example.org");
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.err, HasSubstr("tracking.mlflow.uri"));

  // A run that fails (here: its data set is not where it looks) ends FAILED there.
  fedsilo::testing_util::FakeMlflow failing;
  Output no_data = Fedsilo(run + " --set tracking.mlflow.uri=" + failing.uri(),
                           "FEDSILO_DATA=/nonexistent-fedsilo-data");
  EXPECT_EQ(no_data.status, 2) << no_data.err;
  EXPECT_THAT(no_data.err, HasSubstr("/nonexistent-fedsilo-data/sklearn/digits.csv.gz"));
  const auto failed_runs = failing.runs();
  ASSERT_EQ(failed_runs.size(), 1u);
  EXPECT_EQ(failed_runs.begin()->second.status, "FAILED");
  EXPECT_TRUE(failed_runs.begin()->second.ended);
}

// A data scientist's module that copies a file of the silo into a buffer
// while it trains: refused by name before it runs, in simulation and with
// silo processes, and no run keeps a model.
TEST(CliTest, AModuleThatReadsFilesIsRefusedBeforeItRuns) {
  REQUIRE_DATA();
  const std::string dir = Workdir("thief");
  std::ofstream(dir + "/secret.txt") << std::string(64, 'S');
  fedsilo::ml::ScriptedModule thief;
  thief.parameters = {{"w", {64, 10}}, {"b", {10}}};
  thief.buffers = {{"loot", {64}}};
  thief.methods =
      "def forward(self, x):\n    if self.training:\n        self.loot = "
      "torch.from_file('" +
      dir +
      "/secret.txt', False, 64, dtype=0).float()\n"
      "    return torch.matmul(x, self.w) + self.b\n";
  ASSERT_TRUE(fedsilo::ml::WriteScriptedModule(thief, dir + "/thief.pt").ok());
  for (const char* mode : {"", " --processes"}) {
    Output r =
        Fedsilo("run " + Example("torchscript/digits.yaml") + " --set model.torchscript=" + dir +
                "/thief.pt --set training.rounds=2 --quiet --workdir " + dir + mode);
    EXPECT_EQ(r.status, 2) << mode << r.err;
    EXPECT_THAT(r.err, HasSubstr("thief.pt: refused: method 'forward' uses aten::from_file"))
        << mode;
  }
  for (const auto& f : fs::recursive_directory_iterator(dir)) {
    EXPECT_NE(f.path().filename(), "final_model.fsm") << f.path();
  }
  // What a silo's owner runs before listing a module: the same verdict, and
  // the digest a policy names (the file's sha256sum).
  Output checked = Fedsilo("check-module " + dir + "/thief.pt");
  EXPECT_EQ(checked.status, 2);
  EXPECT_THAT(checked.err, HasSubstr("refused: method 'forward' uses aten::from_file"));
  Output fine = Fedsilo("check-module " + Example("torchscript/digits_net.pt") + " --json");
  ASSERT_EQ(fine.status, 0) << fine.err;
  const nlohmann::json verdict = LastJson(fine.out);
  EXPECT_EQ(verdict["passes"], true);
  EXPECT_EQ(verdict["parameters"], 2474);
  ASSERT_EQ(
      std::system(
          ("sha256sum " + Example("torchscript/digits_net.pt") + " > " + dir + "/sum.txt").c_str()),
      0);
  std::string sum;
  std::ifstream(dir + "/sum.txt") >> sum;
  EXPECT_EQ(verdict["digest"], "sha256:" + sum);
}

// The noise of local DP comes from each silo's own OS randomness, not from
// the job's seed: whoever knows the job cannot subtract it. The same job twice
// gives the same model without DP (the control) and another with it.
TEST(CliTest, LocalDpNoiseComesFromTheSilosNotTheJobsSeed) {
  REQUIRE_DATA();
  const std::string dir = Workdir("dp_noise");
  const std::string run = "run " + Example("digits.yaml") +
                          " --set training.rounds=1 --set seed=7 --quiet --json --workdir " + dir;
  const std::string dp = " --set privacy.dp.mode=local --set privacy.dp.noise_multiplier=1";
  auto model = [&](const std::string& args) {
    Output r = Fedsilo(args);
    EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
    const nlohmann::json summary = LastJson(r.out);
    return summary.is_object() ? fedsilo::testing_util::ReadAll(summary["final_model"]) : "";
  };
  const std::string plain = model(run);
  ASSERT_FALSE(plain.empty());
  EXPECT_EQ(model(run), plain) << "the control: without DP the seed fixes the model";
  const std::string noisy = model(run + dp);
  ASSERT_FALSE(noisy.empty());
  EXPECT_NE(model(run + dp), noisy) << "the DP noise followed the job's seed";
}

TEST(CliTest, TorchScriptFileMustExist) {
  const std::string dir = Workdir("torchscript_bad");
  Output missing = Fedsilo("run " + Example("torchscript/digits.yaml") +
                           " --set model.torchscript=nothere.pt --quiet --workdir " + dir);
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, HasSubstr("--set model.torchscript"));
  EXPECT_THAT(missing.err, HasSubstr("nothere.pt: no such file"));
}

TEST(CliTest, TorchScriptModelMustFitTheData) {
  REQUIRE_DATA();
  const std::string dir = Workdir("torchscript_misfit");
  Output wrong = Fedsilo("run " + Example("torchscript/digits.yaml") +
                         " --set data.dataset=breast_cancer --quiet --workdir " + dir);
  EXPECT_EQ(wrong.status, 2);
  EXPECT_THAT(wrong.err, HasSubstr("digits_net.pt: forward() fails on a batch of shape [2, 30]"));
}

// Secure aggregation and central DP work with a TorchScript model (docs/models.md,
// "Your own model: TorchScript"): its parameters and buffers go through the
// masked sum, or are clipped and noised, and the model learns.
TEST(CliTest, SecureAggregationAndCentralDpWorkWithATorchScriptModel) {
  REQUIRE_DATA();
  const std::string dir = Workdir("torchscript_private");
  const std::string run = "run " + Example("torchscript/digits.yaml") +
                          " --set training.rounds=2 --json --workdir " + dir;
  Output secure = Fedsilo(run + " --set privacy.secure_aggregation=true");
  ASSERT_EQ(secure.status, 0) << secure.err;
  EXPECT_THAT(secure.out, HasSubstr("secure  aggregation: threshold 4 of 5"));
  const nlohmann::json secure_summary = LastJson(secure.out);
  EXPECT_GT(secure_summary["final"]["accuracy"].get<double>(), 0.85);
  const auto secure_metrics = RunMetrics(secure_summary["run_dir"]);
  EXPECT_EQ(secure_metrics.at("global/secagg_quantization_error").size(), 2u);
  for (const auto& [name, by_round] : secure_metrics) {
    // The orchestrator holds the sum only: nothing of any one silo's update.
    EXPECT_EQ(name.rfind("silo-", 0), std::string::npos) << name;
  }

  Output central = Fedsilo(run +
                           " --set privacy.dp.mode=central --set privacy.dp.noise_multiplier=0.01"
                           " --set privacy.dp.clip_norm=10");
  ASSERT_EQ(central.status, 0) << central.err;
  const nlohmann::json central_summary = LastJson(central.out);
  EXPECT_GT(central_summary["final"]["accuracy"].get<double>(), 0.4);  // chance: 0.1
  const auto central_metrics = RunMetrics(central_summary["run_dir"]);
  for (int round = 1; round <= 2; ++round) {
    // Each round's epsilon is the accountant's for that many noised sums.
    Output accountant = Fedsilo("privacy epsilon --sample-rate 1 --noise-multiplier 0.01 --steps " +
                                std::to_string(round) + " --delta 1e-5 --json");
    ASSERT_EQ(accountant.status, 0) << accountant.err;
    EXPECT_DOUBLE_EQ(central_metrics.at("global/epsilon").at(round),
                     LastJson(accountant.out)["epsilon"].get<double>())
        << round;
    EXPECT_EQ(central_metrics.at("global/clip_norm").at(round), 10.0) << round;
  }
}

// Local DP with secure aggregation (docs/secure-aggregation.md): DP-SGD runs
// in each silo before its update is masked, so each silo spends what it
// would without secure aggregation, and the orchestrator learns no silo's
// example count.
TEST(CliTest, LocalDpWithSecureAggregationSpendsAsWithout) {
  REQUIRE_DATA();
  const std::string dir = Workdir("dp_secure");
  const std::string run = "run " + Example("digits.yaml") +
                          " --set training.rounds=2 --set privacy.dp.mode=local"
                          " --set privacy.dp.target_epsilon=4 --quiet --json --workdir " +
                          dir;
  Output plain = Fedsilo(run);
  ASSERT_EQ(plain.status, 0) << plain.err;
  Output secure = Fedsilo(run + " --set privacy.secure_aggregation=true");
  ASSERT_EQ(secure.status, 0) << secure.err;
  const nlohmann::json summary = LastJson(secure.out);
  EXPECT_GT(summary["final"]["accuracy"].get<double>(), 0.3);
  const auto without = RunMetrics(LastJson(plain.out)["run_dir"]);
  const auto with = RunMetrics(summary["run_dir"]);
  EXPECT_EQ(with.at("global/secagg_quantization_error").size(), 2u);
  for (int s = 1; s <= 5; ++s) {
    const std::string silo = "silo-" + std::to_string(s);
    ASSERT_EQ(with.count(silo + "/epsilon"), 1u) << silo;
    const std::map<int, double>& epsilon = with.at(silo + "/epsilon");
    ASSERT_EQ(epsilon.size(), 2u) << silo;
    EXPECT_EQ(epsilon, without.at(silo + "/epsilon")) << silo;
    EXPECT_GT(epsilon.at(2), epsilon.at(1)) << silo;
    EXPECT_LE(epsilon.at(2), 4.0) << silo;
    EXPECT_GE(epsilon.at(2), 4.0 - 0.05) << silo;
    EXPECT_EQ(with.count(silo + "/num_examples"), 0u) << silo;
    EXPECT_EQ(without.count(silo + "/num_examples"), 1u) << silo;  // the control
  }
}

// A run that fails is recorded as failed, with its error.
// Reads a CSV written by `fedsilo predict` into rows of cells.
// Two silos whose images are folders of IDX files: 8x8 images of three
// classes (a bright band at the top, middle or bottom).
TEST(CliTest, SilosTrainOnTheirOwnIdxFolders) {
  const std::string dir = Workdir("idx");
  for (int silo = 0; silo < 2; ++silo) {
    const std::string folder = dir + (silo == 0 ? "/a" : "/b");
    fs::create_directories(folder);
    const uint32_t n = 120;
    std::string images = {0, 0, 8, 3}, labels = {0, 0, 8, 1};
    for (uint32_t d : {n, 8u, 8u}) {
      for (int shift = 24; shift >= 0; shift -= 8) images += static_cast<char>((d >> shift) & 255);
    }
    for (int shift = 24; shift >= 0; shift -= 8) labels += static_cast<char>((n >> shift) & 255);
    for (uint32_t i = 0; i < n; ++i) {
      const int label = static_cast<int>((i * 7 + silo) % 3);
      labels += static_cast<char>(label);
      for (int p = 0; p < 64; ++p) {
        images += static_cast<char>(p / 22 == label ? 190 + (i * p) % 50 : 10 + (i + p) % 30);
      }
    }
    std::ofstream(folder + "/train-images-idx3-ubyte", std::ios::binary) << images;
    std::ofstream(folder + "/train-labels-idx1-ubyte", std::ios::binary) << labels;
  }
  std::ofstream(dir + "/datasets.yaml") << "datasets:\n  scans: {idx: '{silo}'}\n";
  std::ofstream(dir + "/job.yaml")
      << "data: {dataset: scans, catalog: datasets.yaml, silo_test_fraction: 0.2}\n"
      << "preprocess: {scale: standard}\nmodel: {name: mlp, hidden: [16]}\n"
      << "training: {rounds: 4, learning_rate: 0.1}\nfederation: {silos: [a, b]}\n";
  Output r = Fedsilo("run " + dir + "/job.yaml --json --workdir " + dir);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("192 training examples in 2 silos' own files"));
  EXPECT_THAT(r.out, HasSubstr("images [1, 8, 8], scaling standard"));
  const nlohmann::json summary = LastJson(r.out);
  EXPECT_GT(summary["final"]["accuracy"].get<double>(), 0.9);
  EXPECT_THAT(FileBytes(summary["run_dir"].get<std::string>() + "/job.yaml"),
              HasSubstr("shape: [1, 8, 8]"));
  // predict is for CSV rows; it says so for an image model.
  Output p = Fedsilo("predict " + summary["run_id"].get<std::string>() + " --data " + dir +
                     "/job.yaml --workdir " + dir);
  EXPECT_EQ(p.status, 2);
  EXPECT_THAT(p.err, HasSubstr("trained on images (IDX files)"));
}

TEST(CliTest, AFailedRunIsRecordedWithItsError) {
  const std::string workdir = Workdir("runs_failed");
  Output r = Fedsilo("run " + Example("digits.yaml") + " --quiet --workdir " + workdir,
                     "FEDSILO_DATA=/nonexistent-fedsilo-data");
  ASSERT_EQ(r.status, 2);
  Output list = Fedsilo("runs list --json --workdir " + workdir);
  ASSERT_EQ(list.status, 0) << list.err;
  nlohmann::json runs = LastJson(list.out);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["state"], "failed");
  EXPECT_THAT(runs[0]["error"].get<std::string>(),
              HasSubstr("/nonexistent-fedsilo-data/sklearn/digits.csv.gz"));
  EXPECT_EQ(runs[0]["rounds_completed"], 0);
}

TEST(CliTest, HelpForEachCommand) {
  // clang-format off
  for (const char* cmd :
       {"--help", "run --help", "validate --help", "provision --help", "provision add-silo --help",
        "provision revoke --help", "provision list --help",
        "orchestrator --help", "silo --help", "submit --help", "jobs --help", "status --help",
        "logs --help", "abort --help", "download --help", "privacy epsilon --help",
        "privacy noise --help", "silo ledger --help", "runs --help", "runs list --help",
        "runs show --help", "runs compare --help", "runs export --help", "export --help",
        "predict --help", "generate fraud --help", "check-module --help"}) {
    // clang-format on
    Output r = Fedsilo(cmd);
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr("Usage")) << cmd;
  }
  EXPECT_THAT(Fedsilo("run --help").out, HasSubstr("--set"));
  EXPECT_THAT(Fedsilo("orchestrator --help").out, HasSubstr("--insecure"));
  EXPECT_THAT(Fedsilo("status --help").out, HasSubstr("--wait"));
}

// Every command that reads a run takes the key ring the same way: from
// --storage-keys, or from FEDSILO_STORAGE_KEYS (relative to where it runs).
TEST(CliTest, SealedRunsOpenInEveryCommandWithTheKeyRingFromTheFlagOrTheEnvironment) {
  REQUIRE_DATA();
  const std::string dir = Workdir("sealed-commands");
  // A ring in a folder that does not exist yet: made, and private.
  const std::string ring = dir + "/secrets/storage-keys.yaml";
  Output made = Fedsilo("keys new " + ring);
  ASSERT_EQ(made.status, 0) << made.err;
  EXPECT_EQ(fs::status(dir + "/secrets").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(ring).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  const std::string w = " --workdir " + dir;
  Output run = Fedsilo("run " + Example("fraud/fraud.yaml") +
                       " --set training.rounds=2 --quiet --json --storage-keys " + ring + w);
  ASSERT_EQ(run.status, 0) << run.err;
  const nlohmann::json summary = LastJson(run.out);
  const std::string run_id = summary["run_id"];
  const std::string final_model = summary["final_model"];
  ASSERT_EQ(FileBytes(final_model).substr(0, 5), "FSEAL");
  EXPECT_EQ(fs::status(summary["run_dir"].get<std::string>()).permissions() & fs::perms::all,
            fs::perms::owner_all);
  // The resolved job, the federation's statistics in it, is sealed whole.
  const std::string job_file = FileBytes(summary["run_dir"].get<std::string>() + "/job.yaml");
  EXPECT_EQ(job_file.substr(0, 5), "FSEAL");
  EXPECT_THAT(job_file, Not(HasSubstr("statistics")));
  EXPECT_THAT(job_file, Not(HasSubstr("merchant")));

  const std::string data = " --data " + Example("fraud/data/south.csv");
  // Each command, with the file it writes.
  const std::vector<std::pair<std::string, std::string>> commands = {
      {"export " + run_id + " --format fsm --json --out " + dir + "/exported.fsm" + w,
       dir + "/exported.fsm"},
      {"export " + run_id + " --round 1 --format fsm --out " + dir + "/round1.fsm" + w,
       dir + "/round1.fsm"},
      {"predict " + run_id + data + " --out " + dir + "/south.csv --json" + w, dir + "/south.csv"},
  };
  const std::string in_dir = "cd " + dir + " && ";
  for (const auto& [c, output] : commands) {
    // Without the ring: refused, naming the sealed file, with nothing written.
    fs::remove(output);
    Output without = Fedsilo(c);
    EXPECT_EQ(without.status, 2) << c;
    EXPECT_THAT(without.err, HasSubstr(" is encrypted; give its storage key ring")) << c;
    EXPECT_FALSE(fs::exists(output)) << c;
    Output flag = Fedsilo(c + " --storage-keys " + ring);
    EXPECT_EQ(flag.status, 0) << c << "\n" << flag.err;
    Output relative = Fedsilo(c, in_dir + "FEDSILO_STORAGE_KEYS=secrets/storage-keys.yaml");
    EXPECT_EQ(relative.status, 0) << c << "\n" << relative.err;
    Output absolute = Fedsilo(c, "FEDSILO_STORAGE_KEYS=" + ring);
    EXPECT_EQ(absolute.status, 0) << c << "\n" << absolute.err;
  }
  // What came out is the model, opened: the same tensors as the sealed file.
  fedsilo::StatusOr<fedsilo::ModelFile> exported =
      fedsilo::ReadModelStateFile(dir + "/exported.fsm");
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_GT(exported->state.size(), 0u);
  EXPECT_EQ(ReadCsv(dir + "/south.csv").size(), 1501u);

  // The run store's commands take the ring too.
  for (const std::string& c : {"runs list" + w, "runs show " + run_id + w}) {
    // The store is encrypted too: nothing of it is shown without the ring.
    Output without = Fedsilo(c);
    EXPECT_EQ(without.status, 2) << c;
    EXPECT_THAT(without.err, HasSubstr("fedsilo.db: the job store is encrypted")) << c;
    EXPECT_THAT(without.out, Not(HasSubstr(run_id.substr(0, 12)))) << c;
    Output flag = Fedsilo(c + " --storage-keys " + ring);
    EXPECT_EQ(flag.status, 0) << c << "\n" << flag.err;
    EXPECT_THAT(flag.out, HasSubstr(run_id.substr(0, 12))) << c;
  }
  // A ring that others may read is refused by every one of them, by name.
  ASSERT_EQ(::chmod(ring.c_str(), 0644), 0);
  Output loose = Fedsilo(commands[0].first + " --storage-keys " + ring);
  EXPECT_EQ(loose.status, 2);
  EXPECT_THAT(loose.err, HasSubstr(ring + ": the storage key ring may be read by others"));
}

}  // namespace

namespace {

// A vertical job as a user runs it: the example's data generated, its job
// run with its catalogs, the intersection reported; the label owner alone
// for comparison; a bad job refused before anything is recorded.
TEST(CliTest, AVerticalJobRunsTheExampleAndReportsItsIntersection) {
  const std::string dir = Workdir("vertical");
  fs::copy(Example("vertical/catalogs"), dir + "/catalogs", fs::copy_options::recursive);
  fs::copy(Example("vertical/fraud-vertical.yaml"), dir + "/fraud-vertical.yaml");
  Output generated = Fedsilo("generate fraud-vertical --out " + dir + "/data --json");
  ASSERT_EQ(generated.status, 0) << generated.err;
  const nlohmann::json files = LastJson(generated.out);
  ASSERT_EQ(files["files"].size(), 3u);
  const int64_t shared = files["shared"];
  const int64_t bank_rows = files["files"][0]["rows"];
  ASSERT_GT(shared, 0);
  ASSERT_LT(shared, bank_rows);
  // The example's files are what the command writes with its defaults.
  for (const char* party : {"bank", "telecom", "retailer"}) {
    EXPECT_EQ(ReadAll(dir + "/data/" + party + ".csv"),
              ReadAll(Example(std::string("vertical/data/") + party + ".csv")))
        << party;
  }
  Output small = Fedsilo("generate fraud-vertical --out " + dir + "/small --scale 0.1 --seed 3");
  ASSERT_EQ(small.status, 0) << small.err;
  EXPECT_THAT(small.out, HasSubstr("of 1000 customers are at all three"));

  const std::string run =
      "run " + dir + "/fraud-vertical.yaml --workdir " + dir + " --set training.rounds=4 --json";
  Output all = Fedsilo(run);
  ASSERT_EQ(all.status, 0) << all.err;
  EXPECT_THAT(all.out, HasSubstr("private set intersection: " + std::to_string(shared)));
  const nlohmann::json summary = LastJson(all.out);
  EXPECT_EQ(summary["psi"]["intersection"], shared);
  EXPECT_EQ(summary["psi"]["parties"], 3);
  EXPECT_EQ(summary["rounds_completed"], 4);
  EXPECT_GT(summary["final"]["auc"].get<double>(), 0.8);
  const std::string run_dir = summary["run_dir"];
  EXPECT_TRUE(fs::exists(run_dir + "/parties/bank/top.fsm"));
  EXPECT_TRUE(fs::exists(run_dir + "/parties/telecom/bottom.fsm"));
  EXPECT_FALSE(fs::exists(run_dir + "/parties/telecom/top.fsm"));
  const std::string metrics = ReadAll(run_dir + "/metrics.jsonl");
  EXPECT_THAT(metrics, HasSubstr("\"name\":\"global/psi_intersection\""));
  EXPECT_THAT(metrics, HasSubstr("\"name\":\"global/test_auc\",\"round\":4"));

  Output alone = Fedsilo(run + " --set federation.silos=[bank]");
  ASSERT_EQ(alone.status, 0) << alone.err;
  const nlohmann::json bank = LastJson(alone.out);
  EXPECT_EQ(bank["psi"]["intersection"], bank_rows);
  EXPECT_EQ(bank["psi"]["parties"], 1);
  EXPECT_LT(bank["final"]["auc"].get<double>(), summary["final"]["auc"].get<double>());

  // The parties as silo processes over mutual TLS: the same people, and
  // each party's models brought together in the run folder.
  Output processes = Fedsilo(run + " --processes");
  ASSERT_EQ(processes.status, 0) << processes.err;
  const nlohmann::json remote = LastJson(processes.out);
  EXPECT_EQ(remote["psi"]["intersection"], shared);
  EXPECT_GT(remote["final"]["auc"].get<double>(), 0.8);
  EXPECT_TRUE(fs::exists(remote["run_dir"].get<std::string>() + "/parties/bank/top.fsm"));
  EXPECT_TRUE(fs::exists(remote["run_dir"].get<std::string>() + "/parties/retailer/bottom.fsm"));
  // A silo policy that does not allow vertical jobs stops the run, naming it.
  std::ofstream(dir + "/deny.yaml") << "defaults: {max_epsilon: 0}\n";
  Output denied = Fedsilo(run + " --processes --silo-policy " + dir + "/deny.yaml");
  EXPECT_NE(denied.status, 0);
  EXPECT_THAT(denied.err,
              HasSubstr("its policy does not allow it (datasets.customers.vertical.allow)"));

  Output listed = Fedsilo("runs list --json --workdir " + dir);
  ASSERT_EQ(listed.status, 0) << listed.err;
  const size_t runs = nlohmann::json::parse(listed.out).size();
  EXPECT_GE(runs, 3u);

  // Refused, with exit status 2, before a run is recorded.
  Output stranger = Fedsilo(run + " --set vertical.label_owner=insurer");
  EXPECT_EQ(stranger.status, 2);
  EXPECT_THAT(stranger.err, HasSubstr("vertical.label_owner: 'insurer' is not a party of the job"));
  Output policy = Fedsilo(run + " --silo-policy " + dir + "/deny.yaml");
  EXPECT_EQ(policy.status, 2);
  EXPECT_THAT(policy.err, HasSubstr("add --processes"));
  EXPECT_EQ(nlohmann::json::parse(Fedsilo("runs list --json --workdir " + dir).out).size(), runs);
}

// A vertical run's model is in parts, one at each party: new people are
// scored by every party's part at once, aligned by their ids as in training,
// with `fedsilo predict` or with a job that predicts (vertical.predict_with)
// wherever the job runs.
TEST(CliTest, AVerticalRunPredictsNewPeopleWithEveryPartysPart) {
  const std::string dir = Workdir("vertical-predict");
  fs::copy(Example("vertical/catalogs"), dir + "/catalogs", fs::copy_options::recursive);
  fs::copy(Example("vertical/fraud-vertical.yaml"), dir + "/fraud-vertical.yaml");
  ASSERT_EQ(Fedsilo("generate fraud-vertical --out " + dir + "/data").status, 0);
  Output generated = Fedsilo("generate fraud-vertical --out " + dir + "/new --seed 8 --json");
  ASSERT_EQ(generated.status, 0) << generated.err;
  const int64_t shared = LastJson(generated.out)["shared"];
  const std::string run = "run " + dir + "/fraud-vertical.yaml --workdir " + dir + " --json";
  Output trained = Fedsilo(run + " --set training.rounds=3");
  ASSERT_EQ(trained.status, 0) << trained.err;
  const std::string run_id = LastJson(trained.out)["run_id"];
  const int64_t trained_shared = LastJson(trained.out)["psi"]["intersection"];

  const std::string files = " --data bank=" + dir + "/new/bank.csv --data telecom=" + dir +
                            "/new/telecom.csv --data retailer=" + dir + "/new/retailer.csv";
  const std::string predict = "predict " + run_id + " --workdir " + dir;
  Output scored = Fedsilo(predict + files + " --out " + dir + "/p.csv --json");
  ASSERT_EQ(scored.status, 0) << scored.err;
  const nlohmann::json summary = LastJson(scored.out);
  EXPECT_EQ(summary["rows"], shared);
  EXPECT_GT(summary["label_owner_rows"].get<int64_t>(), shared);
  EXPECT_GT(summary["auc"].get<double>(), 0.8);
  const std::string csv = ReadAll(dir + "/p.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "customer_id,predicted,p_0,p_1,is_fraud");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), shared + 1);
  // Rows without the label are scored all the same.
  std::string unlabelled;
  std::istringstream bank_rows(ReadAll(dir + "/new/bank.csv"));
  for (std::string line; std::getline(bank_rows, line);) {
    unlabelled += line.substr(0, line.rfind(',')) + "\n";
  }
  std::ofstream(dir + "/new/bank-unlabelled.csv") << unlabelled;
  Output blind = Fedsilo("predict " + run_id + " --workdir " + dir + " --data bank=" + dir +
                         "/new/bank-unlabelled.csv --data telecom=" + dir +
                         "/new/telecom.csv --data retailer=" + dir + "/new/retailer.csv");
  ASSERT_EQ(blind.status, 0) << blind.err;
  EXPECT_EQ(blind.out.substr(0, blind.out.find('\n')), "customer_id,predicted,p_0,p_1");
  EXPECT_EQ(std::count(blind.out.begin(), blind.out.end(), '\n'), shared + 1);

  // Every party's rows are needed, each as its part reads them.
  Output missing = Fedsilo(predict + " --data bank=" + dir + "/new/bank.csv");
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, HasSubstr("missing: telecom, retailer"));
  Output stranger = Fedsilo(predict + files + " --data insurer=" + dir + "/new/bank.csv");
  EXPECT_EQ(stranger.status, 2);
  EXPECT_THAT(stranger.err, HasSubstr("its parties: bank, telecom, retailer"));
  Output swapped = Fedsilo(predict + " --data bank=" + dir + "/new/bank.csv --data telecom=" + dir +
                           "/new/telecom.csv --data retailer=" + dir + "/new/bank.csv");
  EXPECT_EQ(swapped.status, 2);
  EXPECT_THAT(swapped.err, HasSubstr("party 'retailer'"));
  Output exported = Fedsilo("export " + run_id + " --workdir " + dir + " --out " + dir + "/m.fsm");
  EXPECT_EQ(exported.status, 2);
  EXPECT_THAT(exported.err, HasSubstr("is a vertical job: its model is in parts"));

  // A job that predicts, in simulation and with silo processes: the same
  // predictions, kept by the label owner.
  Output job = Fedsilo(run + " --set vertical.predict_with=" + run_id);
  ASSERT_EQ(job.status, 0) << job.err;
  const nlohmann::json in_process = LastJson(job.out);
  EXPECT_EQ(in_process["rounds_completed"], 1);
  EXPECT_EQ(in_process["psi"]["intersection"], trained_shared);
  const std::string kept = ReadAll(in_process["predictions"].get<std::string>());
  EXPECT_EQ(std::count(kept.begin(), kept.end(), '\n'), trained_shared + 1);
  Output silos = Fedsilo(run + " --processes --set vertical.predict_with=" + run_id);
  ASSERT_EQ(silos.status, 0) << silos.err;
  EXPECT_EQ(ReadAll(LastJson(silos.out)["predictions"].get<std::string>()), kept);
  EXPECT_FALSE(fs::exists(LastJson(silos.out)["run_dir"].get<std::string>() +
                          "/parties/telecom/predictions.csv"));
  Output nothing =
      Fedsilo(run + " --set vertical.predict_with=fraud-vertical-19990101-000000-0000");
  EXPECT_EQ(nothing.status, 2);
  EXPECT_THAT(nothing.err, HasSubstr("has no vertical run 'fraud-vertical-19990101-000000-0000'"));

  // Encrypted at rest: each party's part, and the predictions.
  const std::string ring = dir + "/ring.yaml";
  ASSERT_EQ(Fedsilo("keys new " + ring).status, 0);
  const std::string sealed = "run " + dir + "/fraud-vertical.yaml --json --workdir " + dir +
                             "/sealed --storage-keys " + ring;
  Output sealed_run = Fedsilo(sealed + " --set training.rounds=1");
  ASSERT_EQ(sealed_run.status, 0) << sealed_run.err;
  const nlohmann::json sealed_summary = LastJson(sealed_run.out);
  const std::string parts = sealed_summary["final_model"];
  for (const char* file : {"/bank/top.fsm", "/bank/statistics.fsm", "/retailer/bottom.fsm"}) {
    EXPECT_EQ(FileBytes(parts + file).substr(0, 5), "FSEAL") << file;
  }
  Output sealed_job = Fedsilo(
      sealed + " --set vertical.predict_with=" + sealed_summary["run_id"].get<std::string>());
  ASSERT_EQ(sealed_job.status, 0) << sealed_job.err;
  EXPECT_EQ(FileBytes(LastJson(sealed_job.out)["predictions"]).substr(0, 5), "FSEAL");
}

// The parties' own bottom models, from a TorchScript module with one per
// party (examples/vertical/bottoms.pt, written by make_bottoms.py): trained
// in simulation and with silo processes, kept with each party's part, and
// predicting new people.
TEST(CliTest, AVerticalJobTrainsThePartiesOwnTorchScriptBottomModels) {
  const std::string dir = Workdir("vertical-torchscript");
  fs::copy(Example("vertical/catalogs"), dir + "/catalogs", fs::copy_options::recursive);
  fs::copy(Example("vertical/fraud-vertical.yaml"), dir + "/fraud-vertical.yaml");
  ASSERT_EQ(Fedsilo("generate fraud-vertical --out " + dir + "/data").status, 0);
  ASSERT_EQ(Fedsilo("generate fraud-vertical --out " + dir + "/new --seed 8").status, 0);
  const auto run_in = [&](const std::string& workdir) {
    return "run " + dir + "/fraud-vertical.yaml --workdir " + workdir +
           " --json --set training.rounds=3 --set model.torchscript=" +
           Example("vertical/bottoms.pt");
  };
  const std::string run = run_in(dir);
  Output trained = Fedsilo(run);
  ASSERT_EQ(trained.status, 0) << trained.err;
  const nlohmann::json summary = LastJson(trained.out);
  EXPECT_GT(summary["final"]["auc"].get<double>(), 0.85) << summary;
  const std::string parts = summary["final_model"];
  for (const char* party : {"bank", "telecom", "retailer"}) {
    EXPECT_EQ(FileBytes(parts + "/" + party + "/bottom.pt"),
              FileBytes(Example("vertical/bottoms.pt")))
        << party;
  }
  const std::string run_id = summary["run_id"];
  Output scored =
      Fedsilo("predict " + run_id + " --workdir " + dir + " --json --data bank=" + dir +
              "/new/bank.csv --data telecom=" + dir + "/new/telecom.csv --data retailer=" + dir +
              "/new/retailer.csv --out " + dir + "/p.csv");
  ASSERT_EQ(scored.status, 0) << scored.err;
  EXPECT_GT(LastJson(scored.out)["auc"].get<double>(), 0.85);

  Output silos = Fedsilo(run + " --processes");
  ASSERT_EQ(silos.status, 0) << silos.err;
  EXPECT_GT(LastJson(silos.out)["final"]["auc"].get<double>(), 0.85);
  EXPECT_TRUE(
      fs::exists(LastJson(silos.out)["final_model"].get<std::string>() + "/telecom/bottom.pt"));

  // Kept sealed with a key ring, and predicted with from there.
  const std::string ring = dir + "/ring.yaml";
  ASSERT_EQ(Fedsilo("keys new " + ring).status, 0);
  const std::string in_sealed = run_in(dir + "/sealed");
  Output sealed = Fedsilo(in_sealed + " --set training.rounds=1 --storage-keys " + ring);
  ASSERT_EQ(sealed.status, 0) << sealed.err;
  const nlohmann::json sealed_summary = LastJson(sealed.out);
  EXPECT_EQ(FileBytes(sealed_summary["final_model"].get<std::string>() + "/retailer/bottom.pt")
                .substr(0, 5),
            "FSEAL");
  Output sealed_job =
      Fedsilo(in_sealed + " --storage-keys " + ring +
              " --set vertical.predict_with=" + sealed_summary["run_id"].get<std::string>());
  ASSERT_EQ(sealed_job.status, 0) << sealed_job.err;

  // A module without the parties' bottom models, or whose bottom models do
  // not give the cut layer: refused naming the party, before any id is
  // blinded.
  Output whole = Fedsilo(run + " --set model.torchscript=" + Example("torchscript/digits_net.pt"));
  EXPECT_EQ(whole.status, 2);
  EXPECT_THAT(whole.err, HasSubstr("party 'bank': the job's TorchScript module (model.torchscript) "
                                   "has no submodule 'bank'"));
  EXPECT_THAT(whole.out + whole.err, Not(HasSubstr("private set intersection")));
  Output narrow = Fedsilo(run + " --set vertical.cut_width=4");
  EXPECT_EQ(narrow.status, 2);
  EXPECT_THAT(narrow.err, HasSubstr("returned [2, 8]"));
}

}  // namespace
