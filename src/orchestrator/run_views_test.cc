#include "orchestrator/run_views.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "orchestrator/run_proto.h"

namespace fedsilo::orchestrator {
namespace {

using ::testing::HasSubstr;

// A store with two runs: "digits-a" (two rounds, silos a and b, DP on a) and
// "digits-b" in experiment "other".
std::unique_ptr<JobStore> TwoRuns(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/run_views_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto store = JobStore::Open(dir + "/fedsilo.db");
  EXPECT_TRUE(store.ok()) << store.status();
  for (const char* run : {"digits-a", "digits-b"}) {
    JobRecord j;
    j.name = "digits";
    j.owner = "alice";
    j.job_yaml = "name: digits\n";
    j.rounds_total = 2;
    j.experiment = std::string(run) == "digits-a" ? "default" : "other";
    auto created = (*store)->CreateJob(j);
    EXPECT_TRUE(created.ok());
    EXPECT_TRUE((*store)->SetRunId(created->id, run).ok());
  }
  EXPECT_TRUE((*store)->AddSilos("job-1", {"a", "b"}).ok());
  EXPECT_TRUE((*store)->SetState("job-1", JobState::kRunning).ok());
  EXPECT_TRUE((*store)
                  ->CompleteRound("job-1", {1, 10.0, 0.5, 2, 2, {}},
                                  {{1, "global", "global/test_accuracy", 0.5, 10.0},
                                   {1, "a", "a/num_examples", 40, 10.0},
                                   {1, "a", "a/epsilon", 0.25, 10.0},
                                   {1, "b", "b/num_examples", 60, 10.0}})
                  .ok());
  EXPECT_TRUE((*store)
                  ->CompleteRound("job-1", {2, 11.0, 0.25, 2, 1, {"b: timed out"}},
                                  {{2, "global", "global/test_accuracy", 0.75, 11.0},
                                   {2, "a", "a/num_examples", 40, 11.0},
                                   {2, "a", "a/epsilon", 0.5, 11.0}})
                  .ok());
  EXPECT_TRUE((*store)->AddEvent("job-1", "warn", "silo b dropped").ok());
  EXPECT_TRUE((*store)->SetState("job-1", JobState::kDone).ok());
  return std::move(*store);
}

TEST(RunViewsTest, ARunIsFoundByIdPrefixOrJobIdAndAnUnknownOneIsNamed) {
  auto store = TwoRuns("find");
  EXPECT_EQ(FindRun(*store, "digits-a")->id, "job-1");
  EXPECT_EQ(FindRun(*store, "job-2")->run_id, "digits-b");
  EXPECT_EQ(FindRun(*store, "digits-b")->id, "job-2");
  StatusOr<JobRecord> ambiguous = FindRun(*store, "digits");
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ambiguous.status()));
  EXPECT_THAT(ambiguous.status().message(), HasSubstr("ambiguous"));
  StatusOr<JobRecord> unknown = FindRun(*store, "nope");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("no run 'nope' in " + store->path()));
}

TEST(RunViewsTest, DetailHoldsEveryRoundSiloAndEventWithTheLatestMetrics) {
  auto store = TwoRuns("detail");
  StatusOr<RunData> run = FindAndLoadRun(*store, "digits-a");
  ASSERT_TRUE(run.ok()) << run.status();
  nlohmann::json detail = nlohmann::json::parse(RunDetailJson(*run));
  EXPECT_EQ(detail["state"], "done");
  ASSERT_EQ(detail["rounds"].size(), 2u);
  EXPECT_EQ(detail["rounds"][1]["failures"][0], "b: timed out");
  EXPECT_DOUBLE_EQ(detail["rounds"][1]["metrics"]["global/test_accuracy"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(detail["final_metrics"]["global/test_accuracy"].get<double>(), 0.75);
  ASSERT_EQ(detail["silos"].size(), 2u);
  EXPECT_EQ(detail["silos"][0]["rounds"], 2);
  EXPECT_DOUBLE_EQ(detail["silos"][0]["epsilon"].get<double>(), 0.5);
  EXPECT_TRUE(detail["silos"][1]["epsilon"].is_null());
  EXPECT_THAT(detail["silos"][1]["state"].get<std::string>(), HasSubstr("dropped"));
  ASSERT_FALSE(detail["events"].empty());
  EXPECT_EQ(detail["events"].back()["message"], "silo b dropped");

  // Metric series line up with the rounds; a silo missing from a round is null.
  nlohmann::json series = nlohmann::json::parse(RunMetricsJson(run->metrics));
  EXPECT_EQ(series["rounds"], nlohmann::json({1, 2}));
  EXPECT_EQ(series["series"]["b/num_examples"], nlohmann::json({60.0, nullptr}));
}

TEST(RunViewsTest, LatestMetricsTakesTheLastRoundWhateverTheOrder) {
  std::vector<MetricRow> rows = {{2, "global", "global/loss", 0.2, 0},
                                 {1, "global", "global/loss", 0.9, 0},
                                 {1, "a", "a/loss", 0.5, 0}};
  auto latest = LatestMetrics(rows);
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_DOUBLE_EQ(latest["global/loss"].value, 0.2);
  EXPECT_EQ(latest["global/loss"].round, 2);
}

TEST(RunViewsTest, ExperimentFiltersTheList) {
  auto store = TwoRuns("list");
  auto all = ListRuns(*store, "");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_DOUBLE_EQ(all->at(0).latest.at("global/test_accuracy").value, 0.75);
  auto other = ListRuns(*store, "other");
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ(other->at(0).job.run_id, "digits-b");
  EXPECT_TRUE(ListRuns(*store, "none")->empty());
}

// What the orchestrator sends over the user API reads back as what its store
// holds, so `fedsilo runs --kit` prints what `--workdir` would.
TEST(RunViewsTest, RunsSurviveTheWireUnchanged) {
  auto store = TwoRuns("wire");
  StatusOr<RunData> run = FindAndLoadRun(*store, "digits-a");
  ASSERT_TRUE(run.ok());
  fedsilo::v1::Run wire;
  ToProto(*run, &wire);
  fedsilo::v1::Run parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire.SerializeAsString()));
  const RunData back = FromProto(parsed);
  EXPECT_EQ(RunDetailJson(back), RunDetailJson(*run));
  EXPECT_EQ(RunMetricsJson(back.metrics), RunMetricsJson(run->metrics));
  EXPECT_EQ(back.job.job_yaml, "name: digits\n");
  EXPECT_EQ(back.job.experiment, "default");

  auto runs = ListRuns(*store, "");
  ASSERT_TRUE(runs.ok());
  std::vector<RunSummary> listed;
  for (const RunSummary& r : *runs) {
    fedsilo::v1::RunSummary w;
    ToProto(r, &w);
    listed.push_back(FromProto(w));
  }
  EXPECT_EQ(RunListJson(listed), RunListJson(*runs));
}

}  // namespace
}  // namespace fedsilo::orchestrator
