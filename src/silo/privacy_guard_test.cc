#include "silo/privacy_guard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/job_schema.h"
#include "privacy/rdp_accountant.h"
#include "secure/audit_log.h"

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

DpPlan Plan(double sigma, int64_t steps, double q = 0.05) {
  DpPlan p;
  p.noise_multiplier = sigma;
  p.sample_rate = q;
  p.planned_steps = steps;
  p.steps_per_round = steps / 4;
  p.delta = 1e-5;
  return p;
}

double Eps(double sigma, int64_t steps, double q = 0.05) {
  return privacy::ComputeEpsilon(q, sigma, steps, 1e-5)->epsilon;
}

// The epsilon of several runs composed by RDP, computed here independently.
double Composed(const std::vector<std::pair<double, int64_t>>& runs, double q = 0.05) {
  privacy::RdpAccountant a;
  for (const auto& [sigma, steps] : runs) EXPECT_TRUE(a.Compose(q, sigma, steps).ok());
  return a.Spent(1e-5)->epsilon;
}

std::string FileText(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

TEST(PrivacyGuardTest, PlansAreReservedComposedByRdpAndChargedStepsSurviveARestart) {
  const std::string dir = Fresh("budget");
  const std::string policy = Policy(dir, "datasets:\n  digits: {max_epsilon: 8, delta: 1e-5}\n");
  const std::string ledger = dir + "/state/privacy-ledger.json";
  const DpPlan a = Plan(1.1, 400);
  {
    auto guard = PrivacyGuard::Open(policy, ledger);
    ASSERT_TRUE(guard.ok()) << guard.status();
    auto admitted = (*guard)->Admit("digits", "run-a", DpJob(), &a);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    EXPECT_NEAR(admitted->planned_epsilon, Eps(1.1, 400), 1e-9);
    EXPECT_EQ(admitted->steps, 0);
    // Two rounds charged, the ledger on disk after each.
    ASSERT_TRUE((*guard)->Charge("digits", "run-a", 100).ok());
    auto charged = (*guard)->Charge("digits", "run-a", 100);
    ASSERT_TRUE(charged.ok()) << charged.status();
    EXPECT_NEAR(charged->epsilon, Eps(1.1, 200), 1e-9);
    EXPECT_THAT(FileText(ledger), HasSubstr("\"steps\": 200"));
  }
  // The silo restarts: the run continues from the ledger, with the noise it
  // was admitted with whatever plan the new task brings.
  auto guard = PrivacyGuard::Open(policy, ledger);
  ASSERT_TRUE(guard.ok()) << guard.status();
  const DpPlan other = Plan(3.0, 100);
  auto again = (*guard)->Admit("digits", "run-a", DpJob(), &other);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->steps, 200);
  EXPECT_DOUBLE_EQ(again->noise_multiplier, 1.1);
  EXPECT_NEAR(again->epsilon, Eps(1.1, 200), 1e-9);
  auto third = (*guard)->Charge("digits", "run-a", 100);
  ASSERT_TRUE(third.ok());
  EXPECT_GT(third->epsilon, again->epsilon);  // only ever grows

  // run-a's whole plan is reserved: a second job fits only in what is left of
  // the budget after both are composed.
  const double reserved = Eps(1.1, 400);
  ASSERT_LT(reserved, 8);
  const DpPlan big = Plan(1.0, 400);
  ASSERT_GT(Composed({{1.1, 400}, {1.0, 400}}), 8);
  Status refused = (*guard)->Admit("digits", "run-b", DpJob(), &big).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr(absl::StrFormat("the job would spend epsilon %.3f, and %.3f of the "
                                        "budget 8.000 is spent or reserved already",
                                        Eps(1.0, 400), reserved)));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("by RDP composition, past the budget (max_epsilon)"));
  EXPECT_EQ((*guard)->Entries().size(), 1u);  // a refused run is not recorded

  // RDP composition is what lets this one in: the epsilons would add to more
  // than the budget, their composition does not.
  const DpPlan small = Plan(1.6, 400);
  ASSERT_GT(reserved + Eps(1.6, 400), 8);
  ASSERT_LE(Composed({{1.1, 400}, {1.6, 400}}), 8);
  ASSERT_TRUE((*guard)->Admit("digits", "run-b", DpJob(), &small).ok());
  const BudgetUse use = (*guard)->Use("digits", /*reserved=*/true);
  EXPECT_EQ(use.composition, "RDP");
  EXPECT_NEAR(use.epsilon, Composed({{1.1, 400}, {1.6, 400}}), 1e-9);
  EXPECT_NEAR((*guard)->Use("digits").epsilon, Composed({{1.1, 300}}), 1e-9);
  // Other datasets have no limits.
  EXPECT_TRUE((*guard)->Admit("mnist", "run-c", JobConfig(), nullptr).ok());
}

TEST(PrivacyGuardTest, StepsPastThePlanOrTheBudgetAreRefusedAndNothingIsCharged) {
  const std::string dir = Fresh("charge");
  const std::string policy = Policy(dir, "datasets:\n  digits: {max_epsilon: 50}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  const DpPlan plan = Plan(1.0, 100);
  ASSERT_TRUE((*guard)->Admit("digits", "r", DpJob(), &plan).ok());
  ASSERT_TRUE((*guard)->Charge("digits", "r", 100).ok());
  // An orchestrator asking for a round more than the job planned.
  Status past = (*guard)->Charge("digits", "r", 25).status();
  EXPECT_THAT(std::string(past.message()),
              HasSubstr("would take 125 DP-SGD steps, past the 100 planned"));
  EXPECT_EQ((*guard)->Entries()[0].steps, 100);
  EXPECT_FALSE((*guard)->Charge("digits", "unknown-run", 1).ok());

  // The operator lowers the budget below what the run already reserved:
  // its next round is refused.
  const std::string lower =
      Policy(Fresh("charge_lower"), "datasets:\n  digits: {max_epsilon: 1}\n");
  const DpPlan two = Plan(1.0, 200);
  {
    auto g = PrivacyGuard::Open(policy, dir + "/ledger2.json");
    ASSERT_TRUE((*g)->Admit("digits", "r", DpJob(), &two).ok());
  }
  auto strict = PrivacyGuard::Open(lower, dir + "/ledger2.json");
  ASSERT_TRUE(strict.ok());
  EXPECT_THAT(std::string((*strict)->Charge("digits", "r", 50).status().message()),
              HasSubstr("past the budget") /* the message names the budget */);
  // Nothing of the refused round is charged: not in memory, not on disk.
  ASSERT_EQ((*strict)->Entries().size(), 1u);
  EXPECT_EQ((*strict)->Entries()[0].steps, 0);
  EXPECT_EQ((*strict)->Entries()[0].epsilon, 0);
  EXPECT_EQ((*strict)->Use("digits").epsilon, 0);
  strict->reset();
  auto reopened = PrivacyGuard::Open(policy, dir + "/ledger2.json");
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  ASSERT_EQ((*reopened)->Entries().size(), 1u);
  EXPECT_EQ((*reopened)->Entries()[0].steps, 0);
  // The same charge under the budget it was planned for goes through.
  ASSERT_TRUE((*reopened)->Charge("digits", "r", 50).ok());
  EXPECT_EQ((*reopened)->Entries()[0].steps, 50);
}

TEST(PrivacyGuardTest, ARunsJobAndStatisticsArePinnedAtAdmission) {
  const std::string dir = Fresh("pinned");
  auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  JobConfig job;
  job.privacy.secure_aggregation.enabled = true;
  ASSERT_TRUE((*guard)->Admit("digits", "run", job, nullptr).ok());
  EXPECT_TRUE((*guard)->CheckJob("digits", "run", job).ok());
  // The same run, secure aggregation switched off mid-run.
  JobConfig changed = job;
  changed.privacy.secure_aggregation.enabled = false;
  Status refused = (*guard)->CheckJob("digits", "run", changed);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("silo refuses job 'run': this task carries a job other than the one "
                        "admitted"));
  EXPECT_FALSE((*guard)->Admit("digits", "run", changed, nullptr).ok());
  // Another run may have another job.
  EXPECT_TRUE((*guard)->CheckJob("digits", "other-run", changed).ok());

  // Statistics arrive after the first task; they do not change the pin, but
  // once seen they are pinned too.
  JobConfig with_stats = job;
  with_stats.preprocess.statistics.features = {"a"};
  with_stats.preprocess.statistics.count = {10};
  with_stats.preprocess.statistics.mean = {1};
  with_stats.preprocess.statistics.std = {1};
  EXPECT_TRUE((*guard)->CheckJob("digits", "run", with_stats).ok());
  ASSERT_TRUE((*guard)->PinStatistics("digits", "run", StatisticsDigest(with_stats)).ok());
  JobConfig other_stats = with_stats;
  other_stats.preprocess.statistics.mean = {2};
  EXPECT_THAT(
      std::string(
          (*guard)->PinStatistics("digits", "run", StatisticsDigest(other_stats)).message()),
      HasSubstr("other federated statistics than the run's earlier tasks"));
  // A restart keeps both pins.
  auto reopened = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(reopened.ok());
  EXPECT_FALSE((*reopened)->CheckJob("digits", "run", changed).ok());
  EXPECT_FALSE((*reopened)->PinStatistics("digits", "run", StatisticsDigest(other_stats)).ok());
}

// A run admitted by a silo of fedsilo 0.1.0 pinned its job by the digest of
// that release's resolved YAML; upgraded, the silo computes the same digest
// for the same job and the run goes on.
TEST(PrivacyGuardTest, AJobPinnedByTheReleaseBeforeIsTheSameJobAfterAnUpgrade) {
  const std::string path =
      std::string(FEDSILO_TEST_SOURCE_DIR) + "/tests/fixtures/release-0.1.0/fraud-job.yaml";
  StatusOr<std::string> old = ReadFile(path);
  ASSERT_TRUE(old.ok()) << old.status();
  StatusOr<JobConfig> job = ParseJobConfig(*old, path);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_FALSE(job->preprocess.statistics.empty());
  EXPECT_EQ(StatisticsDigest(*job), secure::BytesDigest(*old));
  JobConfig without_statistics = *job;
  without_statistics.preprocess.statistics = FeatureStatistics();
  EXPECT_EQ(PinnedJobDigest(*job), secure::BytesDigest(JobConfigToStableYaml(without_statistics)));
  EXPECT_NE(PinnedJobDigest(*job), secure::BytesDigest(JobConfigToYaml(without_statistics)));
}

TEST(PrivacyGuardTest, EverySaveMovesTheGenerationOnAndRecordsTheAuditLogsLength) {
  const std::string dir = Fresh("generation");
  std::vector<int64_t> seen;
  {
    auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
    ASSERT_TRUE(guard.ok()) << guard.status();
    EXPECT_EQ((*guard)->generation(), 0);
    int64_t log_entries = 7;
    (*guard)->SetAuditTrail([&log_entries] { return log_entries++; },
                            [&seen](int64_t g) { seen.push_back(g); });
    JobConfig job;
    ASSERT_TRUE((*guard)->Admit("digits", "run-1", job, nullptr).ok());
    ASSERT_TRUE((*guard)->Admit("digits", "run-2", job, nullptr).ok());
    EXPECT_EQ((*guard)->generation(), 2);
    // A refused change saves nothing.
    JobConfig changed = job;
    changed.privacy.secure_aggregation.enabled = true;
    EXPECT_FALSE((*guard)->Admit("digits", "run-1", changed, nullptr).ok());
    EXPECT_EQ((*guard)->generation(), 2);
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2}));
  // The generation is in the file, and a restart goes on from it.
  auto reopened = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->generation(), 2);
  EXPECT_EQ((*reopened)->audited_entries(), 8);  // the log's length at the last save
  ASSERT_TRUE((*reopened)->Admit("digits", "run-3", JobConfig(), nullptr).ok());
  EXPECT_EQ((*reopened)->generation(), 3);
}

TEST(PrivacyGuardTest, EachRequirementIsRefusedNamingItsKey) {
  const std::string dir = Fresh("policy");
  const std::string policy =
      Policy(dir,
             "datasets:\n  digits: {allow_non_dp: false, min_silos: 3}\n"
             "  mnist: {max_epsilon: 8, delta: 1e-6}\n"
             "  scans: {require_local_dp: true, require_secure_aggregation: true}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_THAT(std::string((*guard)->CheckJob("digits", "r", JobConfig()).message()),
              HasSubstr("only differentially private training is allowed (require_local_dp"));
  EXPECT_THAT(std::string((*guard)->CheckJob("digits", "r", DpJob(2)).message()),
              HasSubstr("at least 3 silos (min_silos); the job's federation.min_silos is 2"));
  EXPECT_TRUE((*guard)->CheckJob("digits", "r", DpJob(3)).ok());
  EXPECT_THAT(std::string((*guard)->CheckJob("mnist", "r", DpJob()).message()),
              HasSubstr("delta 1e-05 is above the policy's 1e-06 (delta)"));
  EXPECT_THAT(std::string((*guard)->CheckJob("mnist", "r", JobConfig()).message()),
              HasSubstr("a budget of epsilon 8 applies (max_epsilon), and the job has no DP"));
  EXPECT_THAT(std::string((*guard)->CheckJob("scans", "r", DpJob()).message()),
              HasSubstr("securely aggregated (require_secure_aggregation"));
  JobConfig both = DpJob();
  both.privacy.secure_aggregation.enabled = true;
  EXPECT_TRUE((*guard)->CheckJob("scans", "r", both).ok());
  // A refused job is refused at admission too, and not recorded.
  EXPECT_FALSE((*guard)->Admit("scans", "r", DpJob(), nullptr).ok());
  EXPECT_TRUE((*guard)->Entries().empty());
}

TEST(PrivacyGuardTest, ShippedModulesAreDeniedUnlessListedOrAnyIsAllowed) {
  const std::string dir = Fresh("models");
  const std::string a(64, 'a'), b(64, 'b'), c(64, 'c');
  auto none = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(none.ok());
  Status denied = (*none)->CheckModel("digits", a);
  EXPECT_TRUE(absl::IsFailedPrecondition(denied));
  EXPECT_THAT(std::string(denied.message()), HasSubstr("is not among its allowed_models"));

  const std::string policy = Policy(dir, "defaults: {allowed_models: [" + c +
                                             "]}\n"
                                             "datasets:\n  digits: {allowed_models: [sha256:" +
                                             a + ", " + b + "]}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE((*guard)->CheckModel("digits", a).ok());
  EXPECT_TRUE((*guard)->CheckModel("digits", b).ok());
  EXPECT_FALSE((*guard)->CheckModel("digits", c).ok());  // the dataset's list replaces
  EXPECT_TRUE((*guard)->CheckModel("mnist", c).ok());    // the defaults'
  EXPECT_FALSE((*guard)->CheckModel("mnist", a).ok());
  EXPECT_FALSE((*guard)->allow_any_module());

  auto any = PrivacyGuard::Open(Policy(dir, "allow_any_module: true\n"), dir + "/ledger.json");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_TRUE((*any)->allow_any_module());
  EXPECT_TRUE((*any)->CheckModel("digits", c).ok());

  const std::string bad = Policy(dir, "datasets:\n  digits: {allowed_models: [sha256:abc]}\n");
  auto refused = PrivacyGuard::Open(bad, dir + "/ledger.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("allowed_models: 'sha256:abc' is not sha256:<64 hex digits>"));
}

TEST(PrivacyGuardTest, EvaluationsAreCountedDurablyAndLimited) {
  const std::string dir = Fresh("evaluations");
  const std::string policy = Policy(dir, "datasets:\n  digits: {max_evaluations_per_run: 2}\n");
  JobConfig job;
  job.training.rounds = 10;
  {
    auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
    ASSERT_TRUE(guard.ok()) << guard.status();
    EXPECT_FALSE((*guard)->CountEvaluation("digits", "r", job).ok());  // not admitted
    ASSERT_TRUE((*guard)->Admit("digits", "r", job, nullptr).ok());
    EXPECT_TRUE((*guard)->CountEvaluation("digits", "r", job).ok());
  }
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok());
  EXPECT_TRUE((*guard)->CountEvaluation("digits", "r", job).ok());
  EXPECT_THAT(std::string((*guard)->CountEvaluation("digits", "r", job).message()),
              HasSubstr("has had its 2 evaluations of this silo's test rows "
                        "(max_evaluations_per_run)"));
  EXPECT_EQ((*guard)->Entries()[0].evaluations, 2);
  // Without the key: twice the job's rounds, which the job sets: never more
  // than 200.
  EXPECT_EQ((*guard)->PolicyFor("mnist").MaxEvaluations(job), 20);
  job.training.rounds = 100000;
  EXPECT_EQ((*guard)->PolicyFor("mnist").MaxEvaluations(job), 200);
}

TEST(PrivacyGuardTest, SecureAggregationRevealsSurviveARestartAndASecondSumIsRefused) {
  const std::string dir = Fresh("reveals");
  JobConfig job;
  const secure::SecAggReveal first{"r", 3, "sha256:m3", {"a", "b", "c"}};
  {
    auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
    ASSERT_TRUE(guard.ok()) << guard.status();
    EXPECT_FALSE((*guard)->RecordSecAggReveal("digits", first).ok());  // not admitted
    ASSERT_TRUE((*guard)->Admit("digits", "r", job, nullptr).ok());
    ASSERT_TRUE((*guard)->RecordSecAggReveal("digits", first).ok());
  }
  // A restarted silo (the orchestrator asks the round again, without "c").
  auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE((*guard)->RecordSecAggReveal("digits", first).ok());  // the same sum again
  Status second = (*guard)->RecordSecAggReveal("digits", {"r", 3, "sha256:m3", {"a", "b"}});
  EXPECT_EQ(second.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.message()),
              HasSubstr("already revealed its shares for round 3 of job 'r' over the silos [a, "
                        "b, c]"));
  // Another run from the same model (the same job submitted again) over
  // other silos is refused; over the same silos it goes ahead.
  ASSERT_TRUE((*guard)->Admit("digits", "r2", job, nullptr).ok());
  EXPECT_THAT(
      std::string(
          (*guard)->RecordSecAggReveal("digits", {"r2", 1, "sha256:m3", {"a", "c"}}).message()),
      HasSubstr("from the same global model"));
  EXPECT_TRUE((*guard)->RecordSecAggReveal("digits", {"r2", 1, "sha256:m3", {"a", "b", "c"}}).ok());
  // Another dataset's ledger is its own.
  ASSERT_TRUE((*guard)->Admit("mnist", "r", job, nullptr).ok());
  EXPECT_TRUE((*guard)->RecordSecAggReveal("mnist", {"r", 3, "sha256:m3", {"a", "b"}}).ok());
  EXPECT_THAT(FileText(dir + "/ledger.json"), HasSubstr("secure_aggregation_reveals"));
}

TEST(PrivacyGuardTest, TrainingMetricsAndStatisticsFollowThePolicyAndItsDefaults) {
  const std::string dir = Fresh("shares");
  const std::string policy =
      Policy(dir,
             "datasets:\n  digits: {share_train_metrics: true, statistics: {min_count: 3, "
             "share_min_max: true}}\n  scans: {require_local_dp: true}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  const DatasetPolicy& defaults = (*guard)->PolicyFor("mnist");
  EXPECT_TRUE(defaults.SharesTrainMetrics(JobConfig()));
  EXPECT_FALSE(defaults.SharesTrainMetrics(DpJob()));  // not under local DP
  JobConfig masked;
  masked.privacy.secure_aggregation.enabled = true;
  EXPECT_FALSE(defaults.SharesTrainMetrics(masked));  // nor beside masked updates
  EXPECT_FALSE((*guard)->PolicyFor("scans").SharesTrainMetrics(JobConfig()));
  EXPECT_TRUE((*guard)->PolicyFor("digits").SharesTrainMetrics(DpJob()));  // said so
  EXPECT_EQ(defaults.statistics.min_count, 10);
  EXPECT_FALSE(defaults.statistics.share_min_max);
  EXPECT_EQ((*guard)->PolicyFor("digits").statistics.min_count, 3);
  EXPECT_TRUE((*guard)->PolicyFor("digits").statistics.share_min_max);
}

TEST(PrivacyGuardTest, AVersionOneLedgerComposesBasicallyAndItsRunsCannotGoOn) {
  const std::string dir = Fresh("v1");
  std::ofstream(dir + "/ledger.json")
      << R"({"version": 1, "entries": [{"dataset": "digits", "run_id": "old", "epsilon": 2.0,
            "delta": 1e-5, "first": 1, "last": 2}]})";
  const std::string policy = Policy(dir, "datasets:\n  digits: {max_epsilon: 6, delta: 2e-5}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_EQ((*guard)->Use("digits").composition, "basic");
  EXPECT_DOUBLE_EQ((*guard)->Use("digits").epsilon, 2.0);
  // Basic composition: epsilons and deltas add up.
  const DpPlan fits = Plan(1.6, 400);
  ASSERT_LT(2.0 + Eps(1.6, 400), 6);
  ASSERT_TRUE((*guard)->Admit("digits", "new", DpJob(), &fits).ok());
  BudgetUse use = (*guard)->Use("digits", true);
  EXPECT_NEAR(use.epsilon, 2.0 + Eps(1.6, 400), 1e-9);
  EXPECT_DOUBLE_EQ(use.delta, 2e-5);
  // A third run's delta would pass the budget's.
  const DpPlan tiny = Plan(20, 10);
  EXPECT_THAT(std::string((*guard)->Admit("digits", "third", DpJob(), &tiny).status().message()),
              HasSubstr("basic composition"));
  EXPECT_THAT(std::string((*guard)->Charge("digits", "old", 1).status().message()),
              HasSubstr("admitted by an older fedsilo"));
  // Rewritten as version 2, the old entry keeps its epsilon.
  auto reopened = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_DOUBLE_EQ((*reopened)->Entries()[0].epsilon, 2.0);
  EXPECT_EQ(nlohmann::json::parse(FileText(dir + "/ledger.json"))["version"], 2);
}

TEST(PrivacyGuardTest, NonDpJobsAreRecordedAsUnbounded) {
  const std::string dir = Fresh("nondp");
  {
    auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
    ASSERT_TRUE((*guard)->Admit("digits", "plain", JobConfig(), nullptr).ok());
  }
  auto guard = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE(std::isinf((*guard)->Use("digits").epsilon));
  EXPECT_TRUE(LedgerEntryToJson((*guard)->Entries()[0])["epsilon"].is_null());
  // A ledger kept in memory writes nothing.
  auto memory = PrivacyGuard::Open("", "");
  ASSERT_TRUE(memory.ok());
  ASSERT_TRUE((*memory)->Admit("digits", "plain", JobConfig(), nullptr).ok());
  EXPECT_EQ((*memory)->Entries().size(), 1u);
}

TEST(PrivacyGuardTest, ExportOfMetricsIsTheSilosToForbid) {
  const std::string dir = Fresh("export");
  const std::string policy =
      Policy(dir, "datasets:\n  digits: {export_metrics: false}\n  mnist: {max_epsilon: 5}\n");
  auto guard = PrivacyGuard::Open(policy, dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_FALSE((*guard)->PolicyFor("digits").export_metrics);
  EXPECT_TRUE((*guard)->PolicyFor("mnist").export_metrics);  // named, without the key
  EXPECT_TRUE((*guard)->PolicyFor("adult").export_metrics);  // not named at all
  const std::string bad = Policy(dir, "datasets:\n  digits: {export_metrics: never}\n");
  auto refused = PrivacyGuard::Open(bad, dir + "/ledger.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("datasets.digits.export_metrics: must be true or false"));
}

TEST(PrivacyGuardTest, DamagedLedgerOrPolicyIsAClearError) {
  const std::string dir = Fresh("damaged");
  std::ofstream(dir + "/ledger.json") << "{\"version\": 2, \"entr";
  auto damaged = PrivacyGuard::Open("", dir + "/ledger.json");
  ASSERT_FALSE(damaged.ok());
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("ledger.json"));
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("restore it from a backup"));
  std::ofstream(dir + "/negative.json")
      << R"({"version": 2, "entries": [{"dataset": "d", "run_id": "r", "job_digest": "",
            "statistics_digest": "", "evaluations": 0, "delta": 1e-5, "first": 1, "last": 1,
            "epsilon": 0, "planned_epsilon": 0, "dp": {"accountant": "", "noise_multiplier": 1,
            "sample_rate": 0.1, "steps": -5, "planned_steps": 10}}]})";
  auto negative = PrivacyGuard::Open("", dir + "/negative.json");
  ASSERT_FALSE(negative.ok());
  EXPECT_THAT(std::string(negative.status().message()), HasSubstr("damaged ledger entry"));

  const std::string policy = Policy(dir, "datasets:\n  digits: {max_epsilon: -1}\n");
  auto bad = PrivacyGuard::Open(policy, dir + "/other.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("datasets.digits.max_epsilon"));
  for (const char* typo :
       {"datasets:\n  digits: {max_epsilom: 1}\n", "datasets:\n  d: {statistics: {min: 1}}\n",
        "allow_any_modules: true\n", "datasets:\n  d: {max_evaluations_per_run: 1.5}\n"}) {
    EXPECT_FALSE(PrivacyGuard::Open(Policy(dir, typo), dir + "/other.json").ok()) << typo;
  }
}

}  // namespace
}  // namespace fedsilo::silo
