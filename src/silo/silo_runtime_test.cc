#include "silo/silo_runtime.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fedsilo::silo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/catalog_" + name + ".yaml";
  std::ofstream(path) << text;
  return path;
}

TEST(DatasetCatalogTest, ReadsNamesAndShares) {
  auto catalog = LoadDatasetCatalog(Write(
      "good",
      "datasets:\n  digits: {builtin: digits, share: job}\n  cancer: {builtin: breast_cancer}\n"));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  EXPECT_EQ(catalog->at("digits").builtin, "digits");
  EXPECT_TRUE(catalog->at("digits").share_by_job);
  EXPECT_FALSE(catalog->at("cancer").share_by_job);
  SiloRuntime runtime("s", *catalog, "/nonexistent");
  EXPECT_EQ(runtime.DatasetNames(), (std::vector<std::string>{"cancer", "digits"}));
}

TEST(DatasetCatalogTest, ErrorsNameFileLineAndKey) {
  struct Case {
    const char* text;
    const char* expected;
  };
  for (const Case& c : {
           Case{"datasets:\n  digits: {builtin: digts}\n",
                ":2: datasets.digits.builtin: unknown data set 'digts'"},
           Case{"datasets:\n  digits: {builtin: digits, shared: job}\n",
                "unknown key 'datasets.digits.shared' (did you mean 'datasets.digits.share'?)"},
           Case{"datasets:\n  digits: {builtin: digits, share: all}\n",
                "share: the only value is 'job'"},
           Case{"datasets:\n  digits: {share: job}\n", "datasets.digits.builtin: is required"},
           Case{"files: {}\n", "expected 'datasets:'"},
           Case{"datasets: [\n", "not valid YAML"},
       }) {
    auto catalog = LoadDatasetCatalog(Write("bad", c.text));
    ASSERT_FALSE(catalog.ok()) << c.text;
    EXPECT_EQ(catalog.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(catalog.status().message(), HasSubstr(c.expected));
    EXPECT_THAT(catalog.status().message(), HasSubstr("catalog_bad.yaml"));
  }
  EXPECT_EQ(LoadDatasetCatalog("/nonexistent/datasets.yaml").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SiloRuntimeTest, TaskForADatasetTheSiloLacksIsRefusedByName) {
  SiloRuntime runtime("bank-a", {{"digits", {"digits", false}}}, "/nonexistent");
  JobConfig job;
  job.data.dataset = "mnist";
  ModelState global;
  transport::FitRequest request{"run", 1, 1, &job, &global};
  auto reply = runtime.Fit(request);
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(reply.status().message(),
              HasSubstr("silo 'bank-a' has no dataset 'mnist' (it offers: digits)"));
}

// Loading a TorchScript module runs its code: the silo loads only those in the
// folder its owner named, before touching any data.
TEST(SiloRuntimeTest, TorchScriptModelsLoadOnlyFromTheSilosModelsFolder) {
  const std::string dir = ::testing::TempDir() + "/silo_runtime_models";
  std::filesystem::create_directories(dir + "/allowed");
  JobConfig job;
  job.data.dataset = "digits";
  job.model.kind = ModelKind::kTorchScript;
  job.model.torchscript = dir + "/elsewhere/net.pt";
  ModelState global;
  transport::FitRequest request{"run", 1, 1, &job, &global};

  SiloRuntime closed("bank-a", {{"digits", {"digits", false}}}, "/nonexistent");
  auto refused = closed.Fit(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("loads no TorchScript models"));
  EXPECT_THAT(refused.status().message(), HasSubstr("--models-dir"));

  SiloRuntime open("bank-a", {{"digits", {"digits", false}}}, "/nonexistent");
  open.SetModelsDir(dir + "/allowed");
  auto outside = open.Fit(request);
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(outside.status().message(), HasSubstr("is not in its models folder"));
  job.model.torchscript = dir + "/allowed/../elsewhere/net.pt";  // no way out by ".."
  EXPECT_EQ(open.Fit(request).status().code(), absl::StatusCode::kFailedPrecondition);

  // Inside the folder the job gets as far as the data (absent here).
  job.model.torchscript = dir + "/allowed/net.pt";
  auto inside = open.Fit(request);
  EXPECT_FALSE(inside.ok());
  EXPECT_THAT(inside.status().message(), Not(HasSubstr("models folder")));
}

}  // namespace
}  // namespace fedsilo::silo
