#include "orchestrator/job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

namespace fedsilo::orchestrator {
namespace {

using ::testing::HasSubstr;

std::string FreshPath(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/job_store_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir + "/fedsilo.db";
}

JobRecord Job(const std::string& name) {
  JobRecord j;
  j.name = name;
  j.owner = "alice";
  j.job_yaml = "name: " + name + "\n";
  j.rounds_total = 3;
  return j;
}

TEST(JobStoreTest, JobsRoundsAndEventsSurviveReopening) {
  const std::string path = FreshPath("reopen");
  {
    auto store = JobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto a = (*store)->CreateJob(Job("a"));
    auto b = (*store)->CreateJob(Job("b"));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->id, "job-1");
    EXPECT_EQ(b->id, "job-2");
    ASSERT_TRUE((*store)->SetState("job-1", JobState::kRunning).ok());
    ASSERT_TRUE((*store)->SetRunId("job-1", "a-run").ok());
    RoundRecord r{1, 100.0, 0.5, 3, 2, {"c: gone"}};
    ASSERT_TRUE((*store)
                    ->CompleteRound("job-1", r,
                                    {{1, "global", "global/test_accuracy", 0.8, 100.0},
                                     {1, "a", "a/num_examples", 50, 100.0}})
                    .ok());
    ASSERT_TRUE((*store)->AddEvent("job-1", "info", "round 1 done").ok());
  }
  auto store = JobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto job = (*store)->GetJob("job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_EQ(job->rounds_completed, 1);
  EXPECT_EQ(job->run_id, "a-run");
  EXPECT_GT(job->started, 0);
  auto rounds = (*store)->Rounds("job-1");
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 1u);
  EXPECT_EQ((*rounds)[0].failures, std::vector<std::string>{"c: gone"});
  auto latest = (*store)->LatestMetrics("job-1");
  ASSERT_TRUE(latest.ok());
  EXPECT_DOUBLE_EQ(latest->at("global/test_accuracy").value, 0.8);
  auto events = (*store)->Events("job-1", 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].message, "round 1 done");
  EXPECT_TRUE((*store)->Events("job-1", (*events)[0].seq)->empty());
  auto all = (*store)->ListJobs();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].state, JobState::kQueued);
}

TEST(JobStoreTest, ARoundIsRecordedOnceAndAFailedRecordChangesNothing) {
  auto store = JobStore::Open(FreshPath("once"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
  RoundRecord r{1, 1.0, 0.1, 2, 2, {}};
  ASSERT_TRUE((*store)->CompleteRound("job-1", r, {{1, "global", "global/x", 1, 1}}).ok());
  Status again = (*store)->CompleteRound("job-1", r, {{1, "global", "global/x", 2, 2}});
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;
  auto metrics = (*store)->Metrics("job-1");
  ASSERT_TRUE(metrics.ok());
  ASSERT_EQ(metrics->size(), 1u);  // the second attempt's metric was rolled back
  EXPECT_EQ((*metrics)[0].value, 1);
}

TEST(JobStoreTest, FinishedStatesAndErrors) {
  auto store = JobStore::Open(FreshPath("states"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
  ASSERT_TRUE((*store)->SetState("job-1", JobState::kFailed, "round 2: too few silos").ok());
  auto job = (*store)->GetJob("job-1");
  EXPECT_EQ(job->state, JobState::kFailed);
  EXPECT_EQ(job->error, "round 2: too few silos");
  EXPECT_GT(job->finished, 0);
  EXPECT_TRUE(IsFinished(job->state));
  EXPECT_TRUE(absl::IsNotFound((*store)->SetState("job-9", JobState::kDone)));
  EXPECT_THAT(std::string((*store)->GetJob("job-9").status().message()), HasSubstr("job-9"));
}

TEST(JobStoreTest, NewerSchemaIsRefusedNamingTheFile) {
  const std::string path = FreshPath("newer");
  ASSERT_TRUE(JobStore::Open(path).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = JobStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status()));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("newer"));
}

TEST(JobStoreTest, UnreadableFileIsAClearError) {
  auto store = JobStore::Open("/nonexistent-dir/fedsilo.db");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("/nonexistent-dir/fedsilo.db"));
}

}  // namespace
}  // namespace fedsilo::orchestrator
