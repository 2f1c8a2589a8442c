// SharedRunTest: a suite whose tests all look at one run of a job, run once
// by SetUpTestSuite (`fedsilo run ... --quiet --json` into a folder of the
// suite's own). Such a suite is one CTest test (tests/CMakeLists.txt).
#ifndef FEDSILO_TESTS_EXAMPLE_JOB_H_
#define FEDSILO_TESTS_EXAMPLE_JOB_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace fedsilo::testing_util {

// A file under examples/ of the source tree.
inline std::string Example(const std::string& name) {
  return std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/" + name;
}

// Suite names its folder (kFolder) and the arguments of its run
// (RunArguments(), without --workdir).
template <typename Suite>
class SharedRunTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    namespace fs = std::filesystem;
    dir_ = (fs::path(::testing::TempDir()) /
            (std::string(Suite::kFolder) + "-" + std::to_string(::getpid())))
               .lexically_normal()
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    Output r = Fedsilo("run " + Suite::RunArguments() + " --quiet --json" + Workdir());
    if (r.status != 0) {
      not_run_ = "run: exit " + std::to_string(r.status) + ": " + r.err;
      return;
    }
    summary_ = LastJson(r.out);
  }
  // The folder is kept when a test failed, to look into.
  static void TearDownTestSuite() {
    const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
    if (suite != nullptr && !suite->Failed()) std::filesystem::remove_all(dir_);
  }
  void SetUp() override { ASSERT_EQ(not_run_, "") << "the suite's job did not run"; }

  static const std::string& dir() { return dir_; }
  static std::string Workdir() { return " --workdir " + dir_; }
  // The run's --json summary.
  static const nlohmann::json& summary() { return summary_; }
  static std::string run_id() { return summary_["run_id"]; }
  static std::string run_dir() { return summary_["run_dir"]; }

 private:
  static inline std::string dir_;
  static inline std::string not_run_;
  static inline nlohmann::json summary_;
};

}  // namespace fedsilo::testing_util

#endif  // FEDSILO_TESTS_EXAMPLE_JOB_H_
