#include "orchestrator/job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "secure/storage_keys.h"

namespace fedsilo::orchestrator {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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

TEST(JobStoreTest, TheStoreAndItsJournalArePrivateWhateverTheUmask) {
  const std::string path = FreshPath("private");
  const mode_t old_umask = ::umask(0);
  {
    auto store = JobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
    for (const std::string& f : {path, path + "-wal"}) {
      ASSERT_TRUE(std::filesystem::exists(f)) << f;
      EXPECT_EQ(std::filesystem::status(f).permissions() & std::filesystem::perms::all,
                std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)
          << f;
    }
  }
  // A store another program left readable is made private again.
  std::filesystem::permissions(path, std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  ASSERT_TRUE(JobStore::Open(path).ok());
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  ::umask(old_umask);
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

// Found by the jobs_api fuzz target: an empty id used to select every job
// and return the first, so `fedsilo status ''` showed job-1.
TEST(JobStoreTest, AnEmptyIdIsNoJob) {
  auto store = JobStore::Open(FreshPath("empty_id"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
  EXPECT_TRUE(absl::IsNotFound((*store)->GetJob("").status()));
  EXPECT_TRUE((*store)->GetJob("job-1").ok());
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

// A store written by the first schema (as released) opens with its jobs,
// rounds and metrics intact and gains the new columns and tables.
TEST(JobStoreTest, VersionOneStoreIsMigratedKeepingItsRecords) {
  const std::string path = FreshPath("migrate");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* v1 = R"sql(
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
  name TEXT NOT NULL, owner TEXT NOT NULL, job_yaml TEXT NOT NULL,
  run_id TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, rounds_total INTEGER NOT NULL,
  rounds_completed INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
  started REAL NOT NULL DEFAULT 0, finished REAL NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '', abort_requested INTEGER NOT NULL DEFAULT 0);
CREATE TABLE rounds (job_id TEXT NOT NULL, round INTEGER NOT NULL, finished REAL NOT NULL,
  seconds REAL NOT NULL, silos_sampled INTEGER NOT NULL, silos_succeeded INTEGER NOT NULL,
  failures TEXT NOT NULL, PRIMARY KEY (job_id, round));
CREATE TABLE metrics (job_id TEXT NOT NULL, round INTEGER NOT NULL, source TEXT NOT NULL,
  name TEXT NOT NULL, value REAL NOT NULL, time REAL NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
  time REAL NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL);
INSERT INTO jobs (seq, id, name, owner, job_yaml, run_id, state, rounds_total,
  rounds_completed, created) VALUES (1, 'job-1', 'old', 'bob', 'name: old', 'old-run', 'done',
  2, 2, 1.0);
INSERT INTO rounds VALUES ('job-1', 1, 2.0, 0.5, 2, 2, '[]');
INSERT INTO metrics VALUES ('job-1', 1, 'global', 'global/test_accuracy', 0.75, 2.0);
PRAGMA user_version=1;
)sql";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  auto store = JobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto old = (*store)->GetJob("job-1");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->name, "old");
  EXPECT_EQ(old->run_id, "old-run");
  EXPECT_EQ(old->experiment, "default");
  EXPECT_EQ(old->state, JobState::kDone);
  EXPECT_DOUBLE_EQ((*store)->LatestMetrics("job-1")->at("global/test_accuracy").value, 0.75);
  EXPECT_TRUE((*store)->Silos("job-1")->empty());
  // New jobs carry their experiment and silos.
  JobRecord fresh = Job("new");
  fresh.experiment = "sweep";
  auto made = (*store)->CreateJob(fresh);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->id, "job-2");
  EXPECT_EQ((*store)->GetJob("job-2")->experiment, "sweep");
  ASSERT_TRUE((*store)->AddSilos("job-2", {"a"}).ok());
  EXPECT_EQ((*store)->Silos("job-2")->size(), 1u);

  db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* version = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &version, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(version), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(version, 0), JobStore::kSchemaVersion);
  sqlite3_finalize(version);
  sqlite3_close(db);
}

// Each round updates the silos' part: rounds taken part in, examples, privacy
// spent and when they were last seen; a dropped silo says why.
TEST(JobStoreTest, RoundsKeepTheSilosPartUpToDate) {
  auto store = JobStore::Open(FreshPath("silos"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
  ASSERT_TRUE((*store)->AddSilos("job-1", {"s1", "s2", "s3"}).ok());
  auto silos = (*store)->Silos("job-1");
  ASSERT_EQ(silos->size(), 3u);
  EXPECT_EQ((*silos)[2].state, "waiting");
  EXPECT_EQ((*silos)[2].rounds, 0);

  ASSERT_TRUE((*store)
                  ->CompleteRound("job-1", {1, 10, 1, 3, 2, {"s3: timed out after 600 s"}},
                                  {{1, "s1", "s1/num_examples", 100, 10},
                                   {1, "s1", "s1/epsilon", 0.5, 11},
                                   {1, "s2", "s2/num_examples", 80, 12},
                                   {1, "global", "global/test_accuracy", 0.5, 13}})
                  .ok());
  ASSERT_TRUE((*store)
                  ->CompleteRound("job-1", {2, 20, 1, 3, 3, {}},
                                  {{2, "s1", "s1/num_examples", 100, 20},
                                   {2, "s1", "s1/epsilon", 0.8, 21},
                                   {2, "s3", "s3/train_loss", 0.1, 22}})
                  .ok());
  silos = (*store)->Silos("job-1");
  ASSERT_TRUE(silos.ok());
  ASSERT_EQ(silos->size(), 3u);
  const SiloRow& s1 = (*silos)[0];
  EXPECT_EQ(s1.silo, "s1");
  EXPECT_EQ(s1.state, "ok");
  EXPECT_EQ(s1.rounds, 2);
  EXPECT_EQ(s1.examples, 100);
  EXPECT_DOUBLE_EQ(s1.epsilon, 0.8);
  EXPECT_DOUBLE_EQ(s1.last_seen, 21);
  const SiloRow& s2 = (*silos)[1];
  EXPECT_EQ(s2.rounds, 1);
  EXPECT_EQ(s2.examples, 80);
  EXPECT_DOUBLE_EQ(s2.epsilon, -1);  // never reported
  EXPECT_DOUBLE_EQ(s2.last_seen, 12);
  const SiloRow& s3 = (*silos)[2];
  EXPECT_EQ(s3.state, "ok");  // back in round 2
  EXPECT_EQ(s3.rounds, 1);

  ASSERT_TRUE((*store)->CompleteRound("job-1", {3, 30, 1, 3, 2, {"s2: no reply"}}, {}).ok());
  EXPECT_EQ((*(*store)->Silos("job-1"))[1].state, "dropped: no reply");
  EXPECT_EQ((*(*store)->Silos("job-1"))[1].rounds, 1);
}

TEST(JobStoreTest, UnreadableFileIsAClearError) {
  auto store = JobStore::Open("/nonexistent-dir/fedsilo.db");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("/nonexistent-dir/fedsilo.db"));
}


// --- Encryption at rest --------------------------------------------------

std::shared_ptr<const FileSealer> SealerOf(const secure::KeyRing& ring) {
  return std::make_shared<secure::AeadFileSealer>(ring);
}

// A diverged model's NaN loss does not stop the job: the round is recorded
// without it (SQLite keeps no NaN), with its other metrics. An infinite
// epsilon is kept, in a plain and a sealed store: it must not leave the last
// finite one on show.
TEST(JobStoreTest, ANanMetricIsLeftOutAndAnInfiniteEpsilonIsKept) {
  for (const bool sealed : {false, true}) {
    auto store = sealed ? JobStore::Open(FreshPath("nan-sealed"), SealerOf(secure::NewKeyRing()))
                        : JobStore::Open(FreshPath("nan"));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
    RoundRecord r{1, 1.0, 0.1, 2, 2, {}};
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    ASSERT_TRUE((*store)
                    ->CompleteRound("job-1", r,
                                    {{1, "global", "global/test_loss", nan, 1},
                                     {1, "global", "global/test_accuracy", 0.5, 1},
                                     {1, "a", "a/epsilon", inf, 1}})
                    .ok())
        << sealed;
    auto metrics = (*store)->Metrics("job-1");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    std::map<std::string, double> by_name;
    for (const auto& m : *metrics) by_name[m.name] = m.value;
    EXPECT_EQ(by_name.size(), 2u) << sealed;
    EXPECT_EQ(by_name.count("global/test_loss"), 0u) << sealed;
    EXPECT_EQ(by_name["global/test_accuracy"], 0.5) << sealed;
    EXPECT_TRUE(std::isinf(by_name["a/epsilon"])) << sealed;
    EXPECT_EQ((*store)->Rounds("job-1")->size(), 1u) << sealed;
  }
}

// The bytes of the store and its journal, as someone reading the disk sees
// them.
std::string DiskBytes(const std::string& path) {
  std::string all;
  for (const std::string& f : {path, path + "-wal"}) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += ss.str();
  }
  return all;
}

bool HoldsDouble(const std::string& bytes, double v) {
  // SQLite keeps a REAL as 8 big-endian bytes.
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  std::string be(8, '\0');
  for (int i = 0; i < 8; ++i) be[i] = static_cast<char>(bits >> (56 - 8 * i));
  return bytes.find(be) != std::string::npos;
}

// One job with a statistic in its resolved file, a round with an accuracy,
// a silo's examples and privacy spent, a failure and an event.
void FillWithSecrets(JobStore& store) {
  JobRecord j = Job("secret-job");
  j.job_yaml = "statistics: {mean: 4242.4242}\n";
  auto job = store.CreateJob(j);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(store.AddSilos("job-1", {"a", "b", "c"}).ok());
  RoundRecord r{1, 100.0, 0.5, 3, 2, {"c: row 31337 has a bad cell"}};
  ASSERT_TRUE(store
                  .CompleteRound("job-1", r,
                                 {{1, "global", "global/test_accuracy", 0.123456789, 100.0},
                                  {1, "a", "a/num_examples", 98765, 100.0},
                                  {1, "a", "a/epsilon", 2.71828, 100.0}})
                  .ok());
  ASSERT_TRUE(store.AddEvent("job-1", "warn", "silo c: row 31337 has a bad cell").ok());
  ASSERT_TRUE(store.SetState("job-1", JobState::kFailed, "silo c said 31337").ok());
}

TEST(JobStoreTest, AnEncryptedStoreKeepsNoDataDerivedValueInTheClear) {
  const std::string path = FreshPath("sealed");
  const secure::KeyRing ring = secure::NewKeyRing();
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_TRUE((*store)->encrypted());
    FillWithSecrets(**store);
    const std::string disk = DiskBytes(path);
    for (const char* secret : {"4242.4242", "31337", "2.71828", "98765"}) {
      EXPECT_EQ(disk.find(secret), std::string::npos) << secret << " is on the disk";
    }
    for (double v : {0.123456789, 98765.0, 2.71828}) EXPECT_FALSE(HoldsDouble(disk, v)) << v;
    // What stays readable: names that find rows.
    EXPECT_NE(disk.find("global/test_accuracy"), std::string::npos);
  }
  // Everything comes back with the ring.
  auto store = JobStore::Open(path, SealerOf(ring));
  ASSERT_TRUE(store.ok()) << store.status();
  auto job = (*store)->GetJob("job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->job_yaml, "statistics: {mean: 4242.4242}\n");
  EXPECT_EQ(job->error, "silo c said 31337");
  auto metrics = (*store)->LatestMetrics("job-1");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->at("global/test_accuracy").value, 0.123456789);
  auto silos = (*store)->Silos("job-1");
  ASSERT_TRUE(silos.ok()) << silos.status();
  ASSERT_EQ(silos->size(), 3u);
  EXPECT_EQ((*silos)[0].examples, 98765);
  EXPECT_EQ((*silos)[0].epsilon, 2.71828);
  EXPECT_EQ((*silos)[1].state, "waiting");
  EXPECT_EQ((*silos)[2].state, "dropped: row 31337 has a bad cell");
  auto rounds = (*store)->Rounds("job-1");
  ASSERT_TRUE(rounds.ok() && rounds->size() == 1u);
  EXPECT_EQ((*rounds)[0].failures, std::vector<std::string>{"c: row 31337 has a bad cell"});
  auto events = (*store)->Events("job-1", 0);
  ASSERT_TRUE(events.ok() && events->size() == 1u);
  EXPECT_EQ((*events)[0].message, "silo c: row 31337 has a bad cell");
}

TEST(JobStoreTest, AnEncryptedStoreWithoutItsRingOrAPlainOneWithARingIsRefusedByName) {
  const std::string sealed = FreshPath("sealed-no-ring");
  const secure::KeyRing ring = secure::NewKeyRing();
  ASSERT_TRUE(JobStore::Open(sealed, SealerOf(ring)).ok());
  auto without = JobStore::Open(sealed, nullptr);
  ASSERT_FALSE(without.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(without.status())) << without.status();
  EXPECT_THAT(std::string(without.status().message()), HasSubstr(sealed + ": the job store is encrypted"));
  // Another ring's key does not open it.
  auto other = JobStore::Open(sealed, SealerOf(secure::NewKeyRing()));
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(std::string(other.status().message()), HasSubstr(sealed));

  const std::string plain = FreshPath("plain-with-ring");
  ASSERT_TRUE(JobStore::Open(plain, nullptr).ok());
  auto with = JobStore::Open(plain, SealerOf(ring));
  ASSERT_FALSE(with.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(with.status())) << with.status();
  EXPECT_THAT(std::string(with.status().message()), HasSubstr("seal-existing"));
}

// SQL run on the store at `path` by someone with write access and no key.
void Sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << err;
  sqlite3_free(err);
  sqlite3_close(db);
}

// Someone with write access but no key: moves a sealed value to another row,
// or writes a plain value of their own. Neither is read as genuine.
TEST(JobStoreTest, ASealedValueMovedToAnotherRowOrAPlainOneWrittenInIsRefused) {
  const std::string path = FreshPath("sealed-swap");
  const secure::KeyRing ring = secure::NewKeyRing();
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
    for (int round = 1; round <= 2; ++round) {
      ASSERT_TRUE((*store)
                      ->CompleteRound("job-1", RoundRecord{round, 1.0, 1.0, 1, 1, {}},
                                      {{round, "global", "global/test_accuracy", 0.1 * round, 1.0}})
                      .ok());
    }
  }
  // Round 2's accuracy shown for round 1.
  Sql(path,
      "UPDATE metrics SET value = (SELECT value FROM metrics WHERE round = 2) WHERE round = 1");
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    auto metrics = (*store)->Metrics("job-1");
    ASSERT_FALSE(metrics.ok());
    EXPECT_TRUE(absl::IsDataLoss(metrics.status())) << metrics.status();
    EXPECT_THAT(std::string(metrics.status().message()), HasSubstr("metrics.value of job-1 1"));
  }
  Sql(path, "UPDATE metrics SET value = 0.99 WHERE round = 1");
  auto store = JobStore::Open(path, SealerOf(ring));
  ASSERT_TRUE(store.ok()) << store.status();
  auto metrics = (*store)->Metrics("job-1");
  ASSERT_FALSE(metrics.ok());
  EXPECT_THAT(std::string(metrics.status().message()), HasSubstr("a plain value in an encrypted store"));
}

TEST(JobStoreTest, EveryJobAndRoundRaisesTheGenerationAndTellsTheAuditTrail) {
  const std::string path = FreshPath("generation");
  const secure::KeyRing ring = secure::NewKeyRing();
  std::vector<int64_t> saved;
  int64_t log_length = 5;
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->generation(), 0);
    (*store)->SetAuditTrail([&] { return log_length; },
                            [&](int64_t g) {
                              saved.push_back(g);
                              ++log_length;
                            });
    ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
    ASSERT_TRUE((*store)->CompleteRound("job-1", RoundRecord{1, 1, 1, 1, 1, {}}, {}).ok());
    // A round recorded twice changes nothing, the generation neither.
    ASSERT_FALSE((*store)->CompleteRound("job-1", RoundRecord{1, 1, 1, 1, 1, {}}, {}).ok());
    EXPECT_EQ((*store)->generation(), 2);
    EXPECT_EQ((*store)->audited_entries(), 6);
  }
  EXPECT_EQ(saved, (std::vector<int64_t>{1, 2}));
  auto store = JobStore::Open(path, SealerOf(ring));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->generation(), 2);
  EXPECT_EQ((*store)->audited_entries(), 6);
}

TEST(JobStoreTest, ResealingRotatesTheKeyAndEncryptsAPlainStore) {
  // A plain store, encrypted in place.
  const std::string path = FreshPath("reseal");
  {
    auto store = JobStore::Open(path, nullptr);
    ASSERT_TRUE(store.ok()) << store.status();
    FillWithSecrets(**store);
  }
  secure::KeyRing ring = secure::NewKeyRing();
  auto plain_left = JobStore::Reseal(path, SealerOf(ring), /*seal_plain=*/false);
  ASSERT_TRUE(plain_left.ok()) << plain_left.status();
  EXPECT_EQ(*plain_left, 0);
  ASSERT_TRUE(JobStore::Open(path, nullptr).ok()) << "left plain";
  auto sealed = JobStore::Reseal(path, SealerOf(ring), /*seal_plain=*/true);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_GT(*sealed, 10);
  EXPECT_EQ(DiskBytes(path).find("31337"), std::string::npos);
  EXPECT_FALSE(JobStore::Open(path, nullptr).ok()) << "now encrypted";

  // A new key: everything re-sealed with it, and opens with it alone.
  const std::string old_key = ring.current;
  secure::AddKey(ring);
  auto rotated = JobStore::Reseal(path, SealerOf(ring), false);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(*rotated, *sealed);
  ring.keys.erase(old_key);
  auto store = JobStore::Open(path, SealerOf(ring));
  ASSERT_TRUE(store.ok()) << store.status();
  auto job = (*store)->GetJob("job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->job_yaml, "statistics: {mean: 4242.4242}\n");
  auto metrics = (*store)->LatestMetrics("job-1");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->at("a/num_examples").value, 98765);
  auto events = (*store)->Events("job-1", 0);
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(events->size(), 1u);
}

TEST(JobStoreTest, AnOlderCopyWithTheNewerGenerationCopiedInIsRefused) {
  const std::string path = FreshPath("transplant");
  const secure::KeyRing ring = secure::NewKeyRing();
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateJob(Job("a")).ok());
  }
  // Another folder, the same file name: a copy kept aside.
  const std::string old_copy = FreshPath("transplant-old");
  std::filesystem::copy_file(path, old_copy, std::filesystem::copy_options::overwrite_existing);
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CompleteRound("job-1", RoundRecord{1, 1, 1, 1, 1, {}},
                                        {{1, "global", "global/test_accuracy", 0.5, 1}})
                    .ok());
  }
  // The old copy, given the newer store's sealed generation.
  Sql(old_copy, "ATTACH '" + path + "' AS newer; UPDATE store_meta SET value = (SELECT "
                "value FROM newer.store_meta WHERE key = 'state') WHERE key = 'state'");
  auto old = JobStore::Open(old_copy, SealerOf(ring));
  ASSERT_FALSE(old.ok());
  EXPECT_TRUE(absl::IsDataLoss(old.status())) << old.status();
  EXPECT_THAT(std::string(old.status().message()),
              HasSubstr("rows were removed, or an older copy of the store was put back"));
}

TEST(JobStoreTest, OwnersRunsAndStatesCannotBeReassignedWithoutTheKey) {
  const std::string path = FreshPath("owner");
  const secure::KeyRing ring = secure::NewKeyRing();
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateJob(Job("victim's")).ok());
    JobRecord mallorys = Job("mallory's");
    mallorys.owner = "mallory";
    ASSERT_TRUE((*store)->CreateJob(mallorys).ok());
    ASSERT_TRUE((*store)->SetRunId("job-1", "victim-run").ok());
    ASSERT_TRUE((*store)->SetState("job-1", JobState::kDone).ok());
  }
  // Mallory's sealed name on the victim's job; the victim's run on mallory's;
  // a finished job queued again in the clear.
  for (const std::string& sql :
       {std::string("UPDATE jobs SET owner = (SELECT owner FROM jobs WHERE id = 'job-2') "
                    "WHERE id = 'job-1'"),
        std::string("UPDATE jobs SET run_id = (SELECT run_id FROM jobs WHERE id = 'job-1') "
                    "WHERE id = 'job-2'"),
        std::string("UPDATE jobs SET state = 'queued' WHERE id = 'job-1'")}) {
    const std::string copy = FreshPath("owner-attacked");
    std::filesystem::copy_file(path, copy, std::filesystem::copy_options::overwrite_existing);
    Sql(copy, sql);
    auto store = JobStore::Open(copy, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    auto jobs = (*store)->ListJobs();
    EXPECT_FALSE(jobs.ok()) << sql;
    EXPECT_TRUE(absl::IsDataLoss(jobs.status())) << sql << ": " << jobs.status();
  }
}

TEST(JobStoreTest, AnEncryptedStoreMarkedPlainIsCaughtAndNotLeftAsIsByRotation) {
  const std::string path = FreshPath("mark");
  const secure::KeyRing ring = secure::NewKeyRing();
  {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    FillWithSecrets(**store);
  }
  Sql(path, "UPDATE store_meta SET value = 0 WHERE key = 'encrypted'");
  for (bool seal_plain : {false, true}) {
    auto resealed = JobStore::Reseal(path, SealerOf(ring), seal_plain);
    ASSERT_FALSE(resealed.ok()) << "rotation took an encrypted store for a plain one";
    EXPECT_THAT(std::string(resealed.status().message()), HasSubstr("the mark was changed"));
  }
  EXPECT_FALSE(JobStore::Open(path, nullptr).ok());
}

TEST(JobStoreTest, ValuesCannotMoveBetweenTwoStoresUnderOneRing) {
  const secure::KeyRing ring = secure::NewKeyRing();
  const std::string a = FreshPath("store-a"), b = FreshPath("store-b");
  for (const std::string& path : {a, b}) {
    auto store = JobStore::Open(path, SealerOf(ring));
    ASSERT_TRUE(store.ok()) << store.status();
    FillWithSecrets(**store);
  }
  Sql(b, "ATTACH '" + a + "' AS other; UPDATE metrics SET value = (SELECT value FROM "
         "other.metrics WHERE other.metrics.name = metrics.name)");
  auto store = JobStore::Open(b, SealerOf(ring));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(absl::IsDataLoss((*store)->Metrics("job-1").status()));
}

}  // namespace
}  // namespace fedsilo::orchestrator
