#include "silo/privacy_guard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace fedsilo::silo {
namespace {

using ::testing::HasSubstr;

std::string Fresh(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/guard_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string Policy(const std::string& dir, const std::string& yaml) {
  std::ofstream(dir + "/policy.yaml") << yaml;
  return dir + "/policy.yaml";
}

JobConfig DpJob(int min_silos = 3) {
  JobConfig job;
  job.privacy.dp.mode = DpMode::kLocal;
  job.privacy.dp.noise_multiplier = 1.0;
  job.federation.min_silos = min_silos;
  return job;
}

TEST(PrivacyGuardTest, BudgetIsSpentAcrossJobsAndSurvivesReopening) {
  const std::string dir = Fresh("budget");
  const std::string policy = Policy(dir, "datasets:\n  digits: {max_epsilon: 5, delta: 1e-5}\n");
  {
    auto guard = PrivacyGuard::Open(policy, dir + "/state/privacy-ledger.json");
    ASSERT_TRUE(guard.ok()) << guard.status();
    ASSERT_TRUE((*guard)->Admit("digits", "run-a", DpJob(), 3.0).ok());
    ASSERT_TRUE((*guard)->Record("digits", "run-a", 1.0, 1e-5).ok());
    ASSERT_TRUE((*guard)->Record("digits", "run-a", 3.0, 1e-5).ok());  // replaces, not adds
  }
  auto guard = PrivacyGuard::Open(policy, dir + "/state/privacy-ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_DOUBLE_EQ((*guard)->Spent("digits"), 3.0);
  ASSERT_EQ((*guard)->Entries().size(), 1u);
  // 3 spent, 2 left: a job planning 2.5 is refused and spends nothing.
  Status refused = (*guard)->Admit("digits", "run-b", DpJob(), 2.5);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("would spend epsilon 2.500, and 3.000 of the budget 5.000"));
  EXPECT_EQ((*guard)->Entries().size(), 1u);
  EXPECT_TRUE((*guard)->Admit("digits", "run-b", DpJob(), 2.0).ok());
  // The admitted run's own spending does not count against itself.
  EXPECT_TRUE((*guard)->Admit("digits", "run-a", DpJob(), 3.0).ok());
  // Other datasets have no limits.
  EXPECT_TRUE((*guard)->Admit("mnist", "run-c", JobConfig(), HUGE_VAL).ok());
}

TEST(PrivacyGuardTest, PolicyRefusesNonDpTooFewSilosAndLargerDelta) {
  const std::string dir = Fresh("policy");
  const std::string policy = Policy(dir,
                                    "datasets:\n  digits: {allow_non_dp: false, min_silos: 3}\n"
                                    "  mnist: {max_epsilon: 8, delta: 1e-6}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_THAT(std::string((*guard)->Admit("digits", "r", JobConfig(), HUGE_VAL).message()),
              HasSubstr("only differentially private training is allowed"));
  EXPECT_THAT(std::string((*guard)->Admit("digits", "r", DpJob(2), 1).message()),
              HasSubstr("at least 3 silos; the job's federation.min_silos is 2"));
  EXPECT_TRUE((*guard)->Admit("digits", "r", DpJob(3), 1).ok());
  EXPECT_THAT(std::string((*guard)->Admit("mnist", "r", DpJob(), 1).message()),
              HasSubstr("delta 1e-05 is above the policy's 1e-06"));
  EXPECT_THAT(std::string((*guard)->Admit("mnist", "r", JobConfig(), HUGE_VAL).message()),
              HasSubstr("a budget of epsilon 8 applies, and the job has no DP"));
}

TEST(PrivacyGuardTest, NonDpJobsAreRecordedAsUnbounded) {
  const std::string dir = Fresh("nondp");
  {
    auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
    ASSERT_TRUE((*guard)->Record("digits", "plain", HUGE_VAL, 0).ok());
  }
  auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE(std::isinf((*guard)->Spent("digits")));
}

TEST(PrivacyGuardTest, ExportOfMetricsIsTheSilosToForbid) {
  const std::string dir = Fresh("export");
  const std::string policy = Policy(
      dir, "datasets:\n  digits: {export_metrics: false}\n  mnist: {max_epsilon: 5}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_FALSE((*guard)->ExportsMetrics("digits"));
  EXPECT_TRUE((*guard)->ExportsMetrics("mnist"));    // named, without the key
  EXPECT_TRUE((*guard)->ExportsMetrics("adult"));    // not named at all
  const std::string bad = Policy(dir, "datasets:\n  digits: {export_metrics: never}\n");
  auto refused = PrivacyGuard::Open(bad, dir + "/ledger.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("datasets.digits.export_metrics: must be true or false"));
}

TEST(PrivacyGuardTest, AllowedModelsListsTheModulesJobsMayBring) {
  const std::string dir = Fresh("models");
  const std::string a(64, 'a'), b(64, 'b');
  const std::string policy =
      Policy(dir, "datasets:\n  digits: {allowed_models: [sha256:" + a + ", " + b + "]}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE((*guard)->AcceptsModel("digits", a));
  EXPECT_TRUE((*guard)->AcceptsModel("digits", b));
  EXPECT_FALSE((*guard)->AcceptsModel("digits", std::string(64, 'c')));
  EXPECT_TRUE((*guard)->AcceptsModel("mnist", std::string(64, 'c')));  // no list: any
  const std::string bad = Policy(dir, "datasets:\n  digits: {allowed_models: [sha256:abc]}\n");
  auto refused = PrivacyGuard::Open(bad, dir + "/ledger.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("allowed_models: 'sha256:abc' is not sha256:<64 hex digits>"));
}

TEST(PrivacyGuardTest, DamagedLedgerOrPolicyIsAClearError) {
  const std::string dir = Fresh("damaged");
  std::ofstream(dir + "/ledger.json") << "{\"version\": 1, \"entr";
  auto damaged = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_FALSE(damaged.ok());
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("ledger.json"));
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("restore it from a backup"));

  const std::string policy = Policy(dir, "datasets:\n  digits: {max_epsilon: -1}\n");
  auto bad = PrivacyGuard::Open(policy, dir + "/other.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("datasets.digits.max_epsilon"));
  const std::string typo = Policy(dir, "datasets:\n  digits: {max_epsilom: 1}\n");
  EXPECT_FALSE(PrivacyGuard::Open(typo, dir + "/other.json").ok());
}

}  // namespace
}  // namespace fedsilo::silo
