#include "orchestrator/job_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/mutex.h"
#include "core/unix_time.h"

namespace fedsilo::orchestrator {
namespace {

constexpr const char* kStateNames[] = {"queued", "running", "done", "failed", "aborted"};

// One prepared statement; finalized on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return rc_ == SQLITE_OK || rc_ == SQLITE_ROW || rc_ == SQLITE_DONE; }
  Statement& Bind(int i, const std::string& v) {
    if (ok())
      rc_ = sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t v) {
    if (ok()) rc_ = sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& Bind(int i, int v) { return Bind(i, static_cast<int64_t>(v)); }
  Statement& Bind(int i, double v) {
    if (ok()) rc_ = sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  // True while there is a row; check ok() afterwards.
  bool Step() {
    if (!ok()) return false;
    rc_ = sqlite3_step(stmt_);
    return rc_ == SQLITE_ROW;
  }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(t),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }
  int rc() const { return rc_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  name TEXT NOT NULL,
  owner TEXT NOT NULL,
  job_yaml TEXT NOT NULL,
  run_id TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  rounds_total INTEGER NOT NULL,
  rounds_completed INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL,
  started REAL NOT NULL DEFAULT 0,
  finished REAL NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  abort_requested INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rounds (
  job_id TEXT NOT NULL,
  round INTEGER NOT NULL,
  finished REAL NOT NULL,
  seconds REAL NOT NULL,
  silos_sampled INTEGER NOT NULL,
  silos_succeeded INTEGER NOT NULL,
  failures TEXT NOT NULL,
  PRIMARY KEY (job_id, round));
CREATE TABLE IF NOT EXISTS metrics (
  job_id TEXT NOT NULL,
  round INTEGER NOT NULL,
  source TEXT NOT NULL,
  name TEXT NOT NULL,
  value REAL NOT NULL,
  time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics (job_id, round);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  time REAL NOT NULL,
  level TEXT NOT NULL,
  message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq);
)sql";

// Each step takes the schema from version i to i + 1 (kMigrations[0] creates
// version 1). Never edit a released step: add one.
constexpr const char* kSchemaV2 = R"sql(
ALTER TABLE jobs ADD COLUMN experiment TEXT NOT NULL DEFAULT 'default';
CREATE TABLE IF NOT EXISTS job_silos (
  job_id TEXT NOT NULL,
  silo TEXT NOT NULL,
  state TEXT NOT NULL,
  last_seen REAL NOT NULL DEFAULT 0,
  rounds INTEGER NOT NULL DEFAULT 0,
  examples INTEGER NOT NULL DEFAULT 0,
  epsilon REAL NOT NULL DEFAULT -1,
  PRIMARY KEY (job_id, silo));
)sql";

constexpr const char* kMigrations[] = {kSchemaV1, kSchemaV2};
static_assert(std::size(kMigrations) == JobStore::kSchemaVersion);

constexpr const char* kJobColumns =
    "id, name, owner, job_yaml, run_id, state, rounds_total, rounds_completed, created, started, "
    "finished, error, abort_requested, experiment";

}  // namespace

absl::string_view JobStateName(JobState state) { return kStateNames[static_cast<int>(state)]; }

JobState ParseJobState(absl::string_view name) {
  for (int i = 0; i < 5; ++i) {
    if (name == kStateNames[i]) return static_cast<JobState>(i);
  }
  return JobState::kFailed;
}

bool IsFinished(JobState state) {
  return state == JobState::kDone || state == JobState::kFailed || state == JobState::kAborted;
}

StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  // Private like every file fedsilo keeps (SQLite gives its -wal and -shm
  // files the database file's mode): made 0600, or made so.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 || ::fchmod(fd, 0600) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::InternalError(
        absl::StrCat(path, ": cannot open the job store: ", std::strerror(err)));
  }
  ::close(fd);
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat(path, ": cannot open the job store: ", why));
  }
  sqlite3_busy_timeout(db, 5000);
  auto store = std::unique_ptr<JobStore>(new JobStore(db, path));
  MutexLock lock(&store->mu_);
  FEDSILO_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  FEDSILO_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  int version = 0;
  {
    Statement s(db, "PRAGMA user_version");
    if (s.Step()) version = static_cast<int>(s.Int(0));
    if (!s.ok()) return store->Error("reading the schema version");
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": job store schema version ", version,
                                                      " is newer than this fedsilo understands (",
                                                      kSchemaVersion, "); run a newer fedsilo"));
  }
  if (version == kSchemaVersion) return store;
  // Migrate in one transaction, re-reading the version under the write lock
  // (another process may have migrated meanwhile).
  FEDSILO_RETURN_IF_ERROR(store->Exec("BEGIN IMMEDIATE"));
  {
    Statement s(db, "PRAGMA user_version");
    if (s.Step()) version = static_cast<int>(s.Int(0));
  }
  Status made = absl::OkStatus();
  for (int v = version; v < kSchemaVersion && made.ok(); ++v) {
    made = store->Exec(kMigrations[v]);
    if (!made.ok()) {
      made = absl::InternalError(absl::StrCat("migrating the job store from schema version ", v,
                                              " to ", v + 1, ": ", made.message()));
    }
  }
  if (made.ok()) made = store->Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion));
  if (!made.ok()) {
    store->Exec("ROLLBACK").IgnoreError();
    return made;
  }
  FEDSILO_RETURN_IF_ERROR(store->Exec("COMMIT"));
  if (version > 0) {
    spdlog::info("{}: job store migrated from schema version {} to {}", path, version,
                 kSchemaVersion);
  }
  return store;
}

JobStore::~JobStore() {
  MutexLock lock(&mu_);
  sqlite3_close(db_);
}

Status JobStore::Exec(const std::string& sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat(path_, ": ", why));
  }
  return absl::OkStatus();
}

Status JobStore::Error(absl::string_view what) const {
  return absl::InternalError(absl::StrCat(path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

StatusOr<JobRecord> JobStore::CreateJob(JobRecord job) {
  MutexLock lock(&mu_);
  FEDSILO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  job.created = UnixNow();
  job.state = JobState::kQueued;
  int64_t seq = 0;
  {
    Statement s(db_, "SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs");
    if (s.Step()) seq = s.Int(0);
  }
  job.id = absl::StrCat("job-", seq);
  Statement insert(db_,
                   "INSERT INTO jobs (seq, id, name, owner, job_yaml, run_id, state, rounds_total, "
                   "created, experiment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  insert.Bind(1, seq)
      .Bind(2, job.id)
      .Bind(3, job.name)
      .Bind(4, job.owner)
      .Bind(5, job.job_yaml)
      .Bind(6, job.run_id)
      .Bind(7, std::string(JobStateName(job.state)))
      .Bind(8, job.rounds_total)
      .Bind(9, job.created)
      .Bind(10, job.experiment.empty() ? std::string("default") : job.experiment);
  insert.Step();
  if (!insert.ok()) {
    Status e = Error("adding a job");
    Exec("ROLLBACK").IgnoreError();
    return e;
  }
  FEDSILO_RETURN_IF_ERROR(Exec("COMMIT"));
  return job;
}

StatusOr<std::vector<JobRecord>> JobStore::QueryJobs(const std::string* where_id) const {
  const std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs",
                                       where_id == nullptr ? "" : " WHERE id = ?", " ORDER BY seq");
  Statement s(db_, sql.c_str());
  if (where_id != nullptr) s.Bind(1, *where_id);
  std::vector<JobRecord> out;
  while (s.Step()) {
    JobRecord j;
    j.id = s.Text(0);
    j.name = s.Text(1);
    j.owner = s.Text(2);
    j.job_yaml = s.Text(3);
    j.run_id = s.Text(4);
    j.state = ParseJobState(s.Text(5));
    j.rounds_total = static_cast<int>(s.Int(6));
    j.rounds_completed = static_cast<int>(s.Int(7));
    j.created = s.Double(8);
    j.started = s.Double(9);
    j.finished = s.Double(10);
    j.error = s.Text(11);
    j.abort_requested = s.Int(12) != 0;
    j.experiment = s.Text(13);
    out.push_back(std::move(j));
  }
  if (!s.ok()) return Error("reading jobs");
  return out;
}

StatusOr<JobRecord> JobStore::GetJob(const std::string& id) const {
  MutexLock lock(&mu_);
  FEDSILO_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, QueryJobs(&id));
  if (jobs.empty()) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return std::move(jobs.front());
}

StatusOr<std::vector<JobRecord>> JobStore::ListJobs() const {
  MutexLock lock(&mu_);
  return QueryJobs(nullptr);
}

Status JobStore::SetState(const std::string& id, JobState state, const std::string& error) {
  MutexLock lock(&mu_);
  // ?1 state, ?2 error, ?3 now, ?4 id
  const char* sql = state == JobState::kRunning
                        ? "UPDATE jobs SET state = ?1, error = ?2, "
                          "started = CASE WHEN started = 0 THEN ?3 ELSE started END WHERE id = ?4"
                    : IsFinished(state)
                        ? "UPDATE jobs SET state = ?1, error = ?2, finished = ?3 WHERE id = ?4"
                        : "UPDATE jobs SET state = ?1, error = ?2, finished = 0 WHERE id = ?4";
  Statement s(db_, sql);
  s.Bind(1, std::string(JobStateName(state))).Bind(2, error).Bind(4, id);
  if (state == JobState::kRunning || IsFinished(state)) s.Bind(3, UnixNow());
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return absl::OkStatus();
}

Status JobStore::SetRunId(const std::string& id, const std::string& run_id) {
  MutexLock lock(&mu_);
  Statement s(db_, "UPDATE jobs SET run_id = ? WHERE id = ?");
  s.Bind(1, run_id).Bind(2, id);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  return absl::OkStatus();
}

Status JobStore::SetJobYaml(const std::string& id, const std::string& job_yaml) {
  MutexLock lock(&mu_);
  Statement s(db_, "UPDATE jobs SET job_yaml = ? WHERE id = ?");
  s.Bind(1, job_yaml).Bind(2, id);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  return absl::OkStatus();
}

Status JobStore::RequestAbort(const std::string& id, const std::string& reason) {
  MutexLock lock(&mu_);
  Statement s(db_, "UPDATE jobs SET abort_requested = 1, error = ? WHERE id = ?");
  s.Bind(1, reason).Bind(2, id);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return absl::OkStatus();
}

Status JobStore::CompleteRound(const std::string& id, const RoundRecord& round,
                               const std::vector<MetricRow>& metrics) {
  MutexLock lock(&mu_);
  FEDSILO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](Status e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Exec("ROLLBACK").IgnoreError();
    return e;
  };
  {
    Statement s(db_,
                "INSERT INTO rounds (job_id, round, finished, seconds, silos_sampled, "
                "silos_succeeded, failures) VALUES (?, ?, ?, ?, ?, ?, ?)");
    s.Bind(1, id)
        .Bind(2, round.round)
        .Bind(3, round.finished)
        .Bind(4, round.seconds)
        .Bind(5, round.silos_sampled)
        .Bind(6, round.silos_succeeded)
        .Bind(7, nlohmann::json(round.failures).dump());
    s.Step();
    if (s.rc() == SQLITE_CONSTRAINT) {
      return fail(absl::AlreadyExistsError(
          absl::StrCat("job ", id, ": round ", round.round, " was recorded before")));
    }
    if (!s.ok()) return fail(Error(absl::StrCat("recording round ", round.round)));
  }
  for (const MetricRow& m : metrics) {
    Statement s(db_,
                "INSERT INTO metrics (job_id, round, source, name, value, time) "
                "VALUES (?, ?, ?, ?, ?, ?)");
    s.Bind(1, id)
        .Bind(2, m.round)
        .Bind(3, m.source)
        .Bind(4, m.name)
        .Bind(5, m.value)
        .Bind(6, m.time);
    s.Step();
    if (!s.ok()) return fail(Error("recording a metric"));
  }
  // The silos' part: who reported, how many examples, what privacy spent.
  std::map<std::string, SiloRow> seen;
  for (const MetricRow& m : metrics) {
    if (m.source == "global") continue;
    SiloRow& row = seen[m.source];
    row.last_seen = std::max(row.last_seen, m.time);
    const absl::string_view metric =
        absl::string_view(m.name).substr(std::min(m.name.size(), m.source.size() + 1));
    if (metric == "num_examples") row.examples = static_cast<int64_t>(m.value);
    if (metric == "epsilon") row.epsilon = m.value;
  }
  for (const auto& [silo, row] : seen) {
    Statement s(db_,
                "INSERT INTO job_silos (job_id, silo, state, last_seen, rounds, examples, epsilon) "
                "VALUES (?1, ?2, 'ok', ?3, 1, ?4, ?5) ON CONFLICT (job_id, silo) DO UPDATE SET "
                "state = 'ok', last_seen = ?3, rounds = rounds + 1, "
                "examples = CASE WHEN ?4 > 0 THEN ?4 ELSE examples END, "
                "epsilon = CASE WHEN ?5 >= 0 THEN ?5 ELSE epsilon END");
    s.Bind(1, id).Bind(2, silo).Bind(3, row.last_seen).Bind(4, row.examples).Bind(5, row.epsilon);
    s.Step();
    if (!s.ok()) return fail(Error(absl::StrCat("recording silo ", silo)));
  }
  for (const std::string& failure : round.failures) {
    const size_t colon = failure.find(':');
    const std::string silo = failure.substr(0, colon);
    if (silo.empty() || seen.count(silo) > 0) continue;
    Statement s(db_,
                "INSERT INTO job_silos (job_id, silo, state) VALUES (?1, ?2, ?3) "
                "ON CONFLICT (job_id, silo) DO UPDATE SET state = ?3");
    s.Bind(1, id).Bind(2, silo).Bind(3, colon == std::string::npos
                                            ? std::string("dropped")
                                            : absl::StrCat("dropped:", failure.substr(colon + 1)));
    s.Step();
    if (!s.ok()) return fail(Error(absl::StrCat("recording silo ", silo)));
  }
  {
    Statement s(db_, "UPDATE jobs SET rounds_completed = ? WHERE id = ?");
    s.Bind(1, round.round).Bind(2, id);
    s.Step();
    if (!s.ok()) return fail(Error(absl::StrCat("updating job ", id)));
  }
  return Exec("COMMIT");
}

StatusOr<std::vector<RoundRecord>> JobStore::Rounds(const std::string& id) const {
  MutexLock lock(&mu_);
  Statement s(db_,
              "SELECT round, finished, seconds, silos_sampled, silos_succeeded, failures FROM "
              "rounds WHERE job_id = ? ORDER BY round");
  s.Bind(1, id);
  std::vector<RoundRecord> out;
  while (s.Step()) {
    RoundRecord r;
    r.round = static_cast<int>(s.Int(0));
    r.finished = s.Double(1);
    r.seconds = s.Double(2);
    r.silos_sampled = static_cast<int>(s.Int(3));
    r.silos_succeeded = static_cast<int>(s.Int(4));
    nlohmann::json f = nlohmann::json::parse(s.Text(5), nullptr, false);
    if (f.is_array()) {
      for (const auto& item : f) {
        if (item.is_string()) r.failures.push_back(item.get<std::string>());
      }
    }
    out.push_back(std::move(r));
  }
  if (!s.ok()) return Error("reading rounds");
  return out;
}

StatusOr<std::vector<MetricRow>> JobStore::Metrics(const std::string& id) const {
  MutexLock lock(&mu_);
  Statement s(db_,
              "SELECT round, source, name, value, time FROM metrics WHERE job_id = ? "
              "ORDER BY round, rowid");
  s.Bind(1, id);
  std::vector<MetricRow> out;
  while (s.Step()) {
    out.push_back({static_cast<int>(s.Int(0)), s.Text(1), s.Text(2), s.Double(3), s.Double(4)});
  }
  if (!s.ok()) return Error("reading metrics");
  return out;
}

StatusOr<std::map<std::string, MetricRow>> JobStore::LatestMetrics(const std::string& id) const {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<MetricRow> rows, Metrics(id));
  std::map<std::string, MetricRow> latest;
  for (MetricRow& m : rows) latest[m.name] = std::move(m);  // rows come in round order
  return latest;
}

Status JobStore::AddSilos(const std::string& id, const std::vector<std::string>& silos) {
  MutexLock lock(&mu_);
  FEDSILO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  for (const std::string& silo : silos) {
    Statement s(db_,
                "INSERT INTO job_silos (job_id, silo, state) VALUES (?, ?, 'waiting') "
                "ON CONFLICT (job_id, silo) DO NOTHING");
    s.Bind(1, id).Bind(2, silo);
    s.Step();
    if (!s.ok()) {
      Status e = Error(absl::StrCat("recording silo ", silo));
      Exec("ROLLBACK").IgnoreError();
      return e;
    }
  }
  return Exec("COMMIT");
}

StatusOr<std::vector<SiloRow>> JobStore::Silos(const std::string& id) const {
  MutexLock lock(&mu_);
  Statement s(db_,
              "SELECT silo, state, last_seen, rounds, examples, epsilon FROM job_silos "
              "WHERE job_id = ? ORDER BY rowid");
  s.Bind(1, id);
  std::vector<SiloRow> out;
  while (s.Step()) {
    out.push_back(
        {s.Text(0), s.Text(1), s.Double(2), static_cast<int>(s.Int(3)), s.Int(4), s.Double(5)});
  }
  if (!s.ok()) return Error("reading silos");
  return out;
}

Status JobStore::AddEvent(const std::string& job_id, const std::string& level,
                          const std::string& message) {
  MutexLock lock(&mu_);
  Statement s(db_, "INSERT INTO events (job_id, time, level, message) VALUES (?, ?, ?, ?)");
  s.Bind(1, job_id).Bind(2, UnixNow()).Bind(3, level).Bind(4, message);
  s.Step();
  if (!s.ok()) return Error("recording an event");
  return absl::OkStatus();
}

StatusOr<std::vector<EventRow>> JobStore::Events(const std::string& job_id,
                                                 int64_t after_seq) const {
  MutexLock lock(&mu_);
  Statement s(db_,
              "SELECT seq, job_id, time, level, message FROM events WHERE job_id = ? AND seq > ? "
              "ORDER BY seq");
  s.Bind(1, job_id).Bind(2, after_seq);
  std::vector<EventRow> out;
  while (s.Step()) out.push_back({s.Int(0), s.Text(1), s.Double(2), s.Text(3), s.Text(4)});
  if (!s.ok()) return Error("reading events");
  return out;
}

}  // namespace fedsilo::orchestrator
