// End to end: examples/torchscript/digits.yaml, a job whose model is a user's
// TorchScript module, as a user runs it: trained, exported, sealed, sent to
// MLflow and read back in Python. One run of the job (SetUpTestSuite) serves
// the suite's tests, so the suite is one CTest test (TorchScriptJobTest.All).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/model_state_file.h"
#include "example_job.h"
#include "fake_mlflow.h"
#include "test_util.h"

namespace fedsilo {
namespace {

using ::testing::HasSubstr;
using testing_util::Example;
using testing_util::Fedsilo;
using testing_util::LastJson;
using testing_util::Output;
using testing_util::ReadAll;
namespace fs = std::filesystem;

// The job for 5 rounds, in simulation, once for the suite.
class TorchScriptJobTest : public testing_util::SharedRunTest<TorchScriptJobTest> {
 public:
  static constexpr char kFolder[] = "torchscript-job";
  static std::string RunArguments() {
    return Example("torchscript/digits.yaml") + " --set training.rounds=5";
  }

 protected:
  // The run's final weights, as its .fsm holds them.
  static ModelState FinalWeights() {
    StatusOr<ModelFile> fsm = ReadModelStateFile(summary()["final_model"]);
    EXPECT_TRUE(fsm.ok()) << fsm.status();
    return fsm.ok() ? fsm->state : ModelState{};
  }
};

// The module learns the digits, and the run keeps it as TorchScript.
TEST_F(TorchScriptJobTest, TheModuleLearnsAndComesBackAsTorchScript) {
  EXPECT_GT(summary()["final"]["accuracy"].get<double>(), 0.85);
  EXPECT_TRUE(fs::exists(run_dir() + "/final_model.pt"));
  EXPECT_THAT(ReadAll(run_dir() + "/job.yaml"), HasSubstr("examples/torchscript/digits_net.pt"));
  Output module_ok = Fedsilo("check-module " + run_dir() + "/final_model.pt");
  EXPECT_EQ(module_ok.status, 0) << module_ok.err;
}

// fedsilo export: the final model as .fsm, a kept round as TorchScript (the
// default for such a run); a round that was not kept is named.
TEST_F(TorchScriptJobTest, ExportWritesTheFinalModelOrAKeptRound) {
  Output to_fsm = Fedsilo("export " + run_id() + " --format fsm --out " + dir() + "/x.fsm" +
                          Workdir());
  ASSERT_EQ(to_fsm.status, 0) << to_fsm.err;
  StatusOr<ModelFile> copy = ReadModelStateFile(dir() + "/x.fsm");
  ASSERT_TRUE(copy.ok()) << copy.status();
  const ModelState final_weights = FinalWeights();
  ASSERT_EQ(copy->state.size(), final_weights.size());
  for (size_t i = 0; i < final_weights.size(); ++i) {
    EXPECT_EQ(copy->state.tensors()[i].floats()[0], final_weights.tensors()[i].floats()[0]);
  }
  Output to_pt = Fedsilo("export " + run_id() + " --round 5 --json --out " + dir() + "/r5.pt" +
                         Workdir());
  ASSERT_EQ(to_pt.status, 0) << to_pt.err;
  EXPECT_EQ(LastJson(to_pt.out)["format"], "torchscript");
  EXPECT_TRUE(fs::exists(dir() + "/r5.pt"));
  Output no_round = Fedsilo("export " + run_id() + " --round 7 --out " + dir() + "/r7.pt" +
                            Workdir());
  EXPECT_EQ(no_round.status, 2);
  EXPECT_THAT(no_round.err, HasSubstr("kept no checkpoint of round 7 (kept: 1, 2, 3, 4, 5;"));
  EXPECT_FALSE(fs::exists(dir() + "/r7.pt"));
}

// What export cannot do is refused with exit 2, and nothing is written: a
// built-in model has no TorchScript form; an unknown run; no run store.
TEST_F(TorchScriptJobTest, ExportRefusesWhatItCannotWriteAndWritesNothing) {
  Output mlp = Fedsilo("run " + Example("digits.yaml") + " --set training.rounds=1 --quiet --json" +
                       Workdir());
  ASSERT_EQ(mlp.status, 0) << mlp.err;
  const std::string mlp_id = LastJson(mlp.out)["run_id"];
  Output builtin = Fedsilo("export " + mlp_id + " --format torchscript --out " + dir() + "/b.pt" +
                           Workdir());
  EXPECT_EQ(builtin.status, 2);
  EXPECT_THAT(builtin.err,
              HasSubstr("--format torchscript: run " + mlp_id +
                        "'s model is the built-in mlp, which has no TorchScript form"));
  EXPECT_FALSE(fs::exists(dir() + "/b.pt"));
  Output unknown = Fedsilo("export no-such-run --out " + dir() + "/u.pt" + Workdir());
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, HasSubstr("no run 'no-such-run' in " + dir() + "/fedsilo.db"));
  EXPECT_FALSE(fs::exists(dir() + "/u.pt"));
  const std::string empty = dir() + "/empty";
  fs::create_directories(empty);
  Output no_store = Fedsilo("export " + run_id() + " --out " + dir() + "/n.pt --workdir " + empty);
  EXPECT_EQ(no_store.status, 2);
  EXPECT_THAT(no_store.err, HasSubstr("no run store"));
  EXPECT_FALSE(fs::exists(dir() + "/n.pt"));
}

// Silo processes load the job's module too (from its folder, which the
// local federation allows them).
TEST_F(TorchScriptJobTest, SiloProcessesLoadTheModuleToo) {
  Output processes = Fedsilo("run " + Example("torchscript/digits.yaml") +
                             " --set training.rounds=2 --processes --quiet --json --workdir " +
                             dir() + "/processes");
  ASSERT_EQ(processes.status, 0) << processes.err;
  EXPECT_GT(LastJson(processes.out)["final"]["accuracy"].get<double>(), 0.8);
}

// Exported to MLflow, the TorchScript form goes up beside the .fsm.
TEST_F(TorchScriptJobTest, MlflowGetsTheTorchScriptFormToo) {
  testing_util::FakeMlflow mlflow;
  Output exported = Fedsilo("run " + Example("torchscript/digits.yaml") +
                            " --set training.rounds=1 --quiet --workdir " + dir() + "/mlflow" +
                            " --set tracking.mlflow.uri=" + mlflow.uri());
  ASSERT_EQ(exported.status, 0) << exported.err;
  int torchscript = 0, fsm = 0;
  const auto ends_with = [](const std::string& path, const std::string& tail) {
    return path.size() >= tail.size() && path.substr(path.size() - tail.size()) == tail;
  };
  for (const auto& artifact : mlflow.artifacts()) {
    torchscript += ends_with(artifact.first, "model/final_model.pt");
    fsm += ends_with(artifact.first, "model/final_model.fsm");
  }
  EXPECT_EQ(torchscript, 1);
  EXPECT_EQ(fsm, 1);
}

// With a key ring, the run's final_model.pt is sealed like its weights;
// exported, it is a plain, valid module again.
TEST_F(TorchScriptJobTest, ASealedRunsModuleIsSealedAndExportsPlain) {
  const std::string ring = dir() + "/secrets/ring.yaml";
  ASSERT_EQ(Fedsilo("keys new " + ring).status, 0);
  const std::string sealed_w = " --workdir " + dir() + "/sealed";
  Output sealed = Fedsilo("run " + Example("torchscript/digits.yaml") +
                          " --set training.rounds=1 --quiet --json --storage-keys " + ring +
                          sealed_w);
  ASSERT_EQ(sealed.status, 0) << sealed.err;
  const nlohmann::json sealed_summary = LastJson(sealed.out);
  EXPECT_EQ(ReadAll(sealed_summary["run_dir"].get<std::string>() + "/final_model.pt").substr(0, 5),
            "FSEAL");
  Output plain_pt = Fedsilo("export " + sealed_summary["run_id"].get<std::string>() + " --out " +
                            dir() + "/sealed-run.pt --storage-keys " + ring + sealed_w);
  ASSERT_EQ(plain_pt.status, 0) << plain_pt.err;
  EXPECT_NE(ReadAll(dir() + "/sealed-run.pt").substr(0, 5), "FSEAL");
  Output module_ok = Fedsilo("check-module " + dir() + "/sealed-run.pt");
  EXPECT_EQ(module_ok.status, 0) << module_ok.err;
}

// PyTorch reads the run's final_model.pt, and the same exported by `fedsilo
// export`, with the trained weights value for value. scripts/setup installs
// python3-torch: without it the test fails rather than pass on half.
TEST_F(TorchScriptJobTest, PyTorchLoadsTheTrainedWeightsBack) {
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1"), 0)
      << "python3-torch is missing (/usr/bin/python3 cannot import torch): run scripts/setup";
  const std::string exported_pt = dir() + "/exported.pt";
  ASSERT_EQ(Fedsilo("export " + run_id() + " --out " + exported_pt + Workdir()).status, 0);
  const ModelState final_weights = FinalWeights();
  const std::string json_path = dir() + "/weights.json";
  for (const std::string& file : {run_dir() + "/final_model.pt", exported_pt}) {
    const std::string cmd = "/usr/bin/python3 " + Example("torchscript/show_model.py") + " " +
                            file + " --json > " + json_path;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const nlohmann::json weights = nlohmann::json::parse(ReadAll(json_path));
    ASSERT_EQ(weights.size(), final_weights.size());
    for (const Tensor& t : final_weights.tensors()) {
      ASSERT_TRUE(weights.contains(t.name())) << t.name();
      const auto values = weights[t.name()].get<std::vector<double>>();
      ASSERT_EQ(values.size(), t.floats().size()) << t.name();
      // Integer buffers (batch norm's step count) are averaged as floats and
      // cut to an integer in the module.
      const bool integer = t.name().find("num_batches_tracked") != std::string::npos;
      for (size_t i = 0; i < values.size(); ++i) {
        ASSERT_EQ(static_cast<float>(values[i]),
                  integer ? std::trunc(t.floats()[i]) : t.floats()[i])
            << file << ": " << t.name() << "[" << i << "]";
      }
    }
  }
}

}  // namespace
}  // namespace fedsilo
