#include "orchestrator/job_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstring>
#include <iterator>
#include <random>
#include <utility>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/mutex.h"
#include "core/unix_time.h"

namespace fedsilo::orchestrator {
namespace {

constexpr const char* kStateNames[] = {"queued", "running", "done", "failed", "aborted"};

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

// The store's own facts: "encrypted" (0 or 1, set when the store is
// created), "store_id" (random, part of every sealed value's name, so values
// cannot move between stores), and "state" (sealed in an encrypted store):
// "GENERATION AUDIT_ENTRIES" and the highest row id of each table in
// kCountedTables when the generation was raised.
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value NOT NULL);
)sql";

constexpr const char* kMigrations[] = {kSchemaV1, kSchemaV2, kSchemaV3};
static_assert(std::size(kMigrations) == JobStore::kSchemaVersion);

// The values sealed in an encrypted store: table, column, whether a number,
// and the SQL of the row key they are bound to (FieldName); the code that
// writes each one computes the same key.
struct SecretColumn {
  const char* table;
  const char* column;
  bool number;
  const char* row_key;
  const char* where;
};
constexpr SecretColumn kSecretColumns[] = {
    {"jobs", "owner", false, "id", ""},
    {"jobs", "run_id", false, "id", ""},
    {"jobs", "state", false, "id", ""},
    {"jobs", "job_yaml", false, "id", ""},
    {"jobs", "error", false, "id", ""},
    {"rounds", "failures", false, "job_id || ' ' || round", ""},
    {"metrics", "value", true, "job_id || ' ' || round || ' ' || name", ""},
    {"job_silos", "state", false, "job_id || ' ' || silo", ""},
    {"job_silos", "examples", true, "job_id || ' ' || silo", ""},
    {"job_silos", "epsilon", true, "job_id || ' ' || silo", ""},
    {"events", "message", false, "job_id || ' ' || seq", ""},
    {"store_meta", "value", false, "key", " WHERE key = 'state'"},
};

// The tables rows are only added to; their highest row ids are part of the
// sealed state, so that an older copy of the store does not pass with a
// newer state copied into it.
constexpr const char* kCountedTables[] = {"jobs", "rounds", "metrics", "events"};

constexpr const char* kJobColumns =
    "id, name, owner, job_yaml, run_id, state, rounds_total, rounds_completed, created, started, "
    "finished, error, abort_requested, experiment";

}  // namespace

// One prepared statement; finalized on destruction.
class JobStore::Statement {
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
  Statement& BindBlob(int i, const std::string& v) {
    if (ok())
      rc_ = sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
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
  // The bytes of a BLOB (or TEXT) column.
  std::string Bytes(int col) const {
    const void* b = sqlite3_column_blob(stmt_, col);
    return b == nullptr ? std::string()
                        : std::string(static_cast<const char*>(b),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  bool IsBlob(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_BLOB; }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }
  int rc() const { return rc_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

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

JobStore::JobStore(sqlite3* db, std::string path, std::shared_ptr<const FileSealer> sealer)
    : db_(db), path_(std::move(path)), name_(SealedName(path_)), sealer_(std::move(sealer)) {}

StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  return OpenAs(path, GetFileSealer(), false);
}

StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path,
                                                   std::shared_ptr<const FileSealer> sealer) {
  return OpenAs(path, std::move(sealer), false);
}

StatusOr<std::unique_ptr<JobStore>> JobStore::OpenAs(const std::string& path,
                                                     std::shared_ptr<const FileSealer> sealer,
                                                     bool any_mode) {
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
  const bool have_sealer = sealer != nullptr;
  auto store = std::unique_ptr<JobStore>(new JobStore(db, path, sealer));
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
  if (version < kSchemaVersion) {
    // Migrate in one transaction, re-reading the version under the write lock
    // (another process may have migrated meanwhile).
    FEDSILO_RETURN_IF_ERROR(store->Exec("BEGIN IMMEDIATE"));
    {
      Statement s(db, "PRAGMA user_version");
      if (s.Step()) version = static_cast<int>(s.Int(0));
    }
    // A new store is encrypted when there is a sealer; an older one was not.
    const bool encrypt = version == 0 && have_sealer;
    if (!encrypt) store->sealer_ = nullptr;  // its first values are written plain
    Status made = absl::OkStatus();
    for (int v = version; v < kSchemaVersion && made.ok(); ++v) {
      made = store->Exec(kMigrations[v]);
      if (!made.ok()) {
        made = absl::InternalError(absl::StrCat("migrating the job store from schema version ", v,
                                                " to ", v + 1, ": ", made.message()));
      }
    }
    if (made.ok() && version < 3) {
      Statement s(db, "INSERT INTO store_meta (key, value) VALUES ('encrypted', ?)");
      s.Bind(1, encrypt ? 1 : 0);
      s.Step();
      if (!s.ok()) made = store->Error("recording the store's encryption");
    }
    if (made.ok() && version < 3) {
      std::random_device random;
      store->store_id_ = absl::StrFormat("%08x%08x", random(), random());
      Statement s(db, "INSERT INTO store_meta (key, value) VALUES ('store_id', ?)");
      s.Bind(1, store->store_id_);
      s.Step();
      if (!s.ok()) made = store->Error("recording the store's id");
    }
    if (made.ok() && version < 3) made = store->WriteState(0, 0);
    if (made.ok()) made = store->Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion));
    if (!made.ok()) {
      store->Exec("ROLLBACK").IgnoreError();
      return made;
    }
    FEDSILO_RETURN_IF_ERROR(store->Exec("COMMIT"));
    store->sealer_ = sealer;
    if (version > 0) {
      spdlog::info("{}: job store migrated from schema version {} to {}", path, version,
                   kSchemaVersion);
    }
  }
  bool encrypted = false;
  {
    Statement s(db, "SELECT value FROM store_meta WHERE key = 'encrypted'");
    if (s.Step()) encrypted = s.Int(0) == 1;
    if (!s.ok()) return store->Error("reading the store's encryption");
  }
  if (encrypted && !have_sealer) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the job store is encrypted; give its storage key ring (--storage-keys or ",
        "FEDSILO_STORAGE_KEYS)"));
  }
  if (!encrypted && have_sealer) {
    if (!any_mode) {
      return absl::InvalidArgumentError(absl::StrCat(
          path,
          ": the job store is not encrypted, but a storage key ring is configured, so it "
          "should be; a plain store where an encrypted one belongs is refused. If it was "
          "written before encryption was turned on, encrypt its folder with `fedsilo keys "
          "seal-existing DIR`; if not, someone put it there"));
    }
    store->sealer_ = nullptr;  // read as the plain store it is
  }
  FEDSILO_RETURN_IF_ERROR(store->ReadMeta(encrypted));
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

std::string JobStore::FieldName(absl::string_view column, absl::string_view row) const {
  return absl::StrCat(name_, " ", store_id_, " ", column, " ", row);
}

void JobStore::BindSecret(Statement& s, int i, absl::string_view text, absl::string_view column,
                          absl::string_view row) const {
  if (sealer_ == nullptr) {
    s.Bind(i, std::string(text));
  } else {
    s.BindBlob(i, sealer_->Seal(text, FieldName(column, row)));
  }
}

void JobStore::BindSecretNumber(Statement& s, int i, double value, absl::string_view column,
                                absl::string_view row) const {
  if (sealer_ == nullptr) {
    s.Bind(i, value);
  } else {
    s.BindBlob(i, sealer_->Seal(absl::StrFormat("%.17g", value), FieldName(column, row)));
  }
}

StatusOr<std::string> JobStore::Secret(const Statement& s, int col, absl::string_view column,
                                       absl::string_view row) const {
  const std::string source = absl::StrCat(path_, " (", column, " of ", row, ")");
  if (sealer_ == nullptr) {
    if (s.IsBlob(col)) {
      return absl::DataLossError(
          absl::StrCat(source, ": an encrypted value in a plain store; it was put there"));
    }
    return s.Text(col);
  }
  const std::string bytes = s.Bytes(col);
  if (!s.IsBlob(col) || !IsSealed(bytes)) {
    return absl::DataLossError(absl::StrCat(
        source, ": a plain value in an encrypted store; it was written by someone without the "
                "storage key ring"));
  }
  return sealer_->Open(bytes, FieldName(column, row), source);
}

StatusOr<double> JobStore::SecretNumber(const Statement& s, int col, absl::string_view column,
                                        absl::string_view row) const {
  if (sealer_ == nullptr && !s.IsBlob(col)) return s.Double(col);
  FEDSILO_ASSIGN_OR_RETURN(std::string text, Secret(s, col, column, row));
  double value = 0;
  if (!absl::SimpleAtod(text, &value)) {
    return absl::DataLossError(absl::StrCat(path_, " (", column, " of ", row, "): not a number"));
  }
  return value;
}

StatusOr<std::vector<int64_t>> JobStore::HighestRows() const {
  std::vector<int64_t> rows;
  for (const char* table : kCountedTables) {
    Statement s(db_, absl::StrCat("SELECT COALESCE(MAX(rowid), 0) FROM ", table).c_str());
    if (!s.Step()) return Error(absl::StrCat("reading ", table));
    rows.push_back(s.Int(0));
  }
  return rows;
}

Status JobStore::WriteState(int64_t generation, int64_t audited_entries) {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<int64_t> rows, HighestRows());
  Statement s(db_,
              "INSERT INTO store_meta (key, value) VALUES ('state', ?1) "
              "ON CONFLICT (key) DO UPDATE SET value = ?1");
  BindSecret(s, 1, absl::StrCat(generation, " ", audited_entries, " ", absl::StrJoin(rows, " ")),
             "store_meta.value", "state");
  s.Step();
  if (!s.ok()) return Error("recording the store's generation");
  return absl::OkStatus();
}

Status JobStore::ReadMeta(bool encrypted) {
  {
    Statement s(db_, "SELECT value FROM store_meta WHERE key = 'store_id'");
    if (s.Step()) store_id_ = s.Text(0);
    if (!s.ok()) return Error("reading the store's id");
  }
  Statement s(db_, "SELECT value FROM store_meta WHERE key = 'state'");
  if (!s.Step()) {
    if (!s.ok()) return Error("reading the store's generation");
    return absl::DataLossError(absl::StrCat(path_, ": the store's generation is missing"));
  }
  // The mark says how the store was made; its sealed state must agree, or
  // the mark was changed (to have an encrypted store taken for a plain one).
  if (s.IsBlob(0) != encrypted) {
    return absl::DataLossError(absl::StrCat(
        path_, ": the store is marked ", encrypted ? "encrypted" : "plain",
        " but its generation is ", encrypted ? "not" : "", " encrypted: the mark was changed"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string state, Secret(s, 0, "store_meta.value", "state"));
  std::vector<int64_t> numbers;
  for (absl::string_view part : absl::StrSplit(state, ' ')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(part, &n)) break;
    numbers.push_back(n);
  }
  if (numbers.size() != 2 + std::size(kCountedTables)) {
    return absl::DataLossError(absl::StrCat(path_, ": the store's generation is damaged"));
  }
  generation_ = numbers[0];
  audited_entries_ = numbers[1];
  // An older copy has fewer rows than its (newer, transplanted) state says.
  FEDSILO_ASSIGN_OR_RETURN(std::vector<int64_t> rows, HighestRows());
  for (size_t t = 0; t < rows.size(); ++t) {
    if (rows[t] < numbers[2 + t]) {
      return absl::DataLossError(absl::StrCat(
          path_, ": table ", kCountedTables[t], " ends at row ", rows[t], ", but generation ",
          generation_, " recorded row ", numbers[2 + t],
          ": rows were removed, or an older copy of the store was put back"));
    }
  }
  return absl::OkStatus();
}

void JobStore::SetAuditTrail(std::function<int64_t()> entries,
                             std::function<void(int64_t)> saved) {
  MutexLock lock(&mu_);
  audit_entries_ = std::move(entries);
  audit_saved_ = std::move(saved);
}

int64_t JobStore::generation() const {
  MutexLock lock(&mu_);
  return generation_;
}

int64_t JobStore::audited_entries() const {
  MutexLock lock(&mu_);
  return audited_entries_;
}

Status JobStore::RaiseGeneration() {
  const int64_t audited = audit_entries_ ? audit_entries_() : audited_entries_;
  FEDSILO_RETURN_IF_ERROR(WriteState(generation_ + 1, audited));
  raised_ = audited;
  return absl::OkStatus();
}

Status JobStore::Commit() {
  const std::optional<int64_t> raised = std::exchange(raised_, std::nullopt);
  FEDSILO_RETURN_IF_ERROR(Exec("COMMIT"));
  if (raised.has_value()) {
    ++generation_;
    audited_entries_ = *raised;
    if (audit_saved_) audit_saved_(generation_);
  }
  return absl::OkStatus();
}

StatusOr<JobRecord> JobStore::CreateJob(JobRecord job) {
  MutexLock lock(&mu_);
  FEDSILO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](Status e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    raised_ = std::nullopt;
    Exec("ROLLBACK").IgnoreError();
    return e;
  };
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
                   "created, experiment, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  insert.Bind(1, seq).Bind(2, job.id).Bind(3, job.name);
  BindSecret(insert, 4, job.owner, "jobs.owner", job.id);
  BindSecret(insert, 5, job.job_yaml, "jobs.job_yaml", job.id);
  BindSecret(insert, 6, job.run_id, "jobs.run_id", job.id);
  BindSecret(insert, 7, JobStateName(job.state), "jobs.state", job.id);
  insert.Bind(8, job.rounds_total)
      .Bind(9, job.created)
      .Bind(10, job.experiment.empty() ? std::string("default") : job.experiment);
  BindSecret(insert, 11, "", "jobs.error", job.id);
  insert.Step();
  if (!insert.ok()) return fail(Error("adding a job"));
  if (Status raised = RaiseGeneration(); !raised.ok()) return fail(raised);
  FEDSILO_RETURN_IF_ERROR(Commit());
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
    FEDSILO_ASSIGN_OR_RETURN(j.owner, Secret(s, 2, "jobs.owner", j.id));
    FEDSILO_ASSIGN_OR_RETURN(j.job_yaml, Secret(s, 3, "jobs.job_yaml", j.id));
    FEDSILO_ASSIGN_OR_RETURN(j.run_id, Secret(s, 4, "jobs.run_id", j.id));
    FEDSILO_ASSIGN_OR_RETURN(const std::string state, Secret(s, 5, "jobs.state", j.id));
    j.state = ParseJobState(state);
    j.rounds_total = static_cast<int>(s.Int(6));
    j.rounds_completed = static_cast<int>(s.Int(7));
    j.created = s.Double(8);
    j.started = s.Double(9);
    j.finished = s.Double(10);
    FEDSILO_ASSIGN_OR_RETURN(j.error, Secret(s, 11, "jobs.error", j.id));
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
  BindSecret(s, 1, JobStateName(state), "jobs.state", id);
  BindSecret(s, 2, error, "jobs.error", id);
  s.Bind(4, id);
  if (state == JobState::kRunning || IsFinished(state)) s.Bind(3, UnixNow());
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return absl::OkStatus();
}

Status JobStore::SetRunId(const std::string& id, const std::string& run_id) {
  MutexLock lock(&mu_);
  Statement s(db_, "UPDATE jobs SET run_id = ? WHERE id = ?");
  BindSecret(s, 1, run_id, "jobs.run_id", id);
  s.Bind(2, id);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  return absl::OkStatus();
}

Status JobStore::SetJobYaml(const std::string& id, const std::string& job_yaml) {
  MutexLock lock(&mu_);
  Statement s(db_, "UPDATE jobs SET job_yaml = ? WHERE id = ?");
  BindSecret(s, 1, job_yaml, "jobs.job_yaml", id);
  s.Bind(2, id);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  return absl::OkStatus();
}

Status JobStore::RequestAbort(const std::string& id, const std::string& reason) {
  MutexLock lock(&mu_);
  Statement s(db_, "UPDATE jobs SET abort_requested = 1, error = ? WHERE id = ?");
  BindSecret(s, 1, reason, "jobs.error", id);
  s.Bind(2, id);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("updating job ", id));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return absl::OkStatus();
}

StatusOr<std::optional<SiloRow>> JobStore::SiloLocked(const std::string& id,
                                                      const std::string& silo) const {
  Statement s(db_,
              "SELECT state, last_seen, rounds, examples, epsilon FROM job_silos "
              "WHERE job_id = ? AND silo = ?");
  s.Bind(1, id).Bind(2, silo);
  if (!s.Step()) {
    if (!s.ok()) return Error(absl::StrCat("reading silo ", silo));
    return std::optional<SiloRow>();
  }
  const std::string row = absl::StrCat(id, " ", silo);
  SiloRow out;
  out.silo = silo;
  FEDSILO_ASSIGN_OR_RETURN(out.state, Secret(s, 0, "job_silos.state", row));
  out.last_seen = s.Double(1);
  out.rounds = static_cast<int>(s.Int(2));
  FEDSILO_ASSIGN_OR_RETURN(double examples, SecretNumber(s, 3, "job_silos.examples", row));
  out.examples = static_cast<int64_t>(examples);
  FEDSILO_ASSIGN_OR_RETURN(out.epsilon, SecretNumber(s, 4, "job_silos.epsilon", row));
  return std::optional<SiloRow>(std::move(out));
}

Status JobStore::PutSilo(const std::string& id, const SiloRow& r) {
  Statement s(db_,
              "INSERT INTO job_silos (job_id, silo, state, last_seen, rounds, examples, epsilon) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (job_id, silo) DO UPDATE SET "
              "state = ?3, last_seen = ?4, rounds = ?5, examples = ?6, epsilon = ?7");
  const std::string row = absl::StrCat(id, " ", r.silo);
  s.Bind(1, id).Bind(2, r.silo);
  BindSecret(s, 3, r.state, "job_silos.state", row);
  s.Bind(4, r.last_seen).Bind(5, r.rounds);
  BindSecretNumber(s, 6, static_cast<double>(r.examples), "job_silos.examples", row);
  BindSecretNumber(s, 7, r.epsilon, "job_silos.epsilon", row);
  s.Step();
  if (!s.ok()) return Error(absl::StrCat("recording silo ", r.silo));
  return absl::OkStatus();
}

Status JobStore::CompleteRound(const std::string& id, const RoundRecord& round,
                               const std::vector<MetricRow>& metrics) {
  MutexLock lock(&mu_);
  FEDSILO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto fail = [&](Status e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    raised_ = std::nullopt;
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
        .Bind(6, round.silos_succeeded);
    BindSecret(s, 7, nlohmann::json(round.failures).dump(), "rounds.failures",
               absl::StrCat(id, " ", round.round));
    s.Step();
    if (s.rc() == SQLITE_CONSTRAINT) {
      return fail(absl::AlreadyExistsError(
          absl::StrCat("job ", id, ": round ", round.round, " was recorded before")));
    }
    if (!s.ok()) return fail(Error(absl::StrCat("recording round ", round.round)));
  }
  std::vector<std::string> not_numbers;
  for (const MetricRow& m : metrics) {
    // A model that diverged has a loss of NaN: said, not stored (SQLite keeps
    // no NaN, and the column holds numbers), and the job goes on. An infinite
    // value -- an epsilon no guarantee bounds -- is a number, and is stored:
    // dropping it would leave the last finite epsilon on show.
    if (std::isnan(m.value)) {
      not_numbers.push_back(absl::CEscape(m.name));  // a silo names its metrics
      continue;
    }
    Statement s(db_,
                "INSERT INTO metrics (job_id, round, source, name, value, time) "
                "VALUES (?, ?, ?, ?, ?, ?)");
    s.Bind(1, id).Bind(2, m.round).Bind(3, m.source).Bind(4, m.name);
    BindSecretNumber(s, 5, m.value, "metrics.value", absl::StrCat(id, " ", m.round, " ", m.name));
    s.Bind(6, m.time);
    s.Step();
    if (!s.ok()) return fail(Error("recording a metric"));
  }
  // The silos' part: who reported, how many examples, what privacy spent.
  std::map<std::string, SiloRow> seen;
  if (!not_numbers.empty()) {
    spdlog::warn("job {}: round {}: {} not recorded: not a number", id, round.round,
                 absl::StrJoin(not_numbers, ", "));
  }
  for (const MetricRow& m : metrics) {
    if (m.source == "global" || std::isnan(m.value)) continue;
    SiloRow& row = seen[m.source];
    row.last_seen = std::max(row.last_seen, m.time);
    const absl::string_view metric =
        absl::string_view(m.name).substr(std::min(m.name.size(), m.source.size() + 1));
    if (metric == "num_examples") row.examples = static_cast<int64_t>(m.value);
    if (metric == "epsilon") row.epsilon = m.value;
  }
  for (const auto& [silo, now] : seen) {
    StatusOr<std::optional<SiloRow>> before = SiloLocked(id, silo);
    if (!before.ok()) return fail(before.status());
    SiloRow row = before->value_or(SiloRow{silo, "", 0, 0, 0, -1});
    row.state = "ok";
    row.last_seen = now.last_seen;
    row.rounds += 1;
    if (now.examples > 0) row.examples = now.examples;
    if (now.epsilon >= 0) row.epsilon = now.epsilon;
    if (Status put = PutSilo(id, row); !put.ok()) return fail(put);
  }
  for (const std::string& failure : round.failures) {
    const size_t colon = failure.find(':');
    const std::string silo = failure.substr(0, colon);
    if (silo.empty() || seen.count(silo) > 0) continue;
    StatusOr<std::optional<SiloRow>> before = SiloLocked(id, silo);
    if (!before.ok()) return fail(before.status());
    SiloRow row = before->value_or(SiloRow{silo, "", 0, 0, 0, -1});
    row.state = colon == std::string::npos ? std::string("dropped")
                                           : absl::StrCat("dropped:", failure.substr(colon + 1));
    if (Status put = PutSilo(id, row); !put.ok()) return fail(put);
  }
  {
    Statement s(db_, "UPDATE jobs SET rounds_completed = ? WHERE id = ?");
    s.Bind(1, round.round).Bind(2, id);
    s.Step();
    if (!s.ok()) return fail(Error(absl::StrCat("updating job ", id)));
  }
  if (Status raised = RaiseGeneration(); !raised.ok()) return fail(raised);
  return Commit();
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
    FEDSILO_ASSIGN_OR_RETURN(std::string failures,
                             Secret(s, 5, "rounds.failures", absl::StrCat(id, " ", r.round)));
    nlohmann::json f = nlohmann::json::parse(failures, nullptr, false);
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
    MetricRow m{static_cast<int>(s.Int(0)), s.Text(1), s.Text(2), 0, s.Double(4)};
    FEDSILO_ASSIGN_OR_RETURN(
        m.value, SecretNumber(s, 3, "metrics.value", absl::StrCat(id, " ", m.round, " ", m.name)));
    out.push_back(std::move(m));
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
    StatusOr<std::optional<SiloRow>> before = SiloLocked(id, silo);
    Status put = before.status();
    if (put.ok() && !before->has_value()) put = PutSilo(id, SiloRow{silo, "waiting", 0, 0, 0, -1});
    if (!put.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return put;
    }
  }
  return Exec("COMMIT");
}

StatusOr<std::vector<SiloRow>> JobStore::Silos(const std::string& id) const {
  MutexLock lock(&mu_);
  Statement s(db_, "SELECT silo FROM job_silos WHERE job_id = ? ORDER BY rowid");
  s.Bind(1, id);
  std::vector<SiloRow> out;
  while (s.Step()) {
    FEDSILO_ASSIGN_OR_RETURN(std::optional<SiloRow> row, SiloLocked(id, s.Text(0)));
    if (row.has_value()) out.push_back(*std::move(row));
  }
  if (!s.ok()) return Error("reading silos");
  return out;
}

Status JobStore::AddEvent(const std::string& job_id, const std::string& level,
                          const std::string& message) {
  MutexLock lock(&mu_);
  FEDSILO_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  int64_t seq = 0;
  {
    Statement s(db_, "SELECT COALESCE(MAX(seq), 0) + 1 FROM events");
    if (s.Step()) seq = s.Int(0);
  }
  Statement s(db_, "INSERT INTO events (seq, job_id, time, level, message) VALUES (?, ?, ?, ?, ?)");
  s.Bind(1, seq).Bind(2, job_id).Bind(3, UnixNow()).Bind(4, level);
  BindSecret(s, 5, message, "events.message", absl::StrCat(job_id, " ", seq));
  s.Step();
  if (!s.ok()) {
    Status e = Error("recording an event");
    Exec("ROLLBACK").IgnoreError();
    return e;
  }
  return Exec("COMMIT");
}

StatusOr<std::vector<EventRow>> JobStore::Events(const std::string& job_id,
                                                 int64_t after_seq) const {
  MutexLock lock(&mu_);
  Statement s(db_,
              "SELECT seq, job_id, time, level, message FROM events WHERE job_id = ? AND seq > ? "
              "ORDER BY seq");
  s.Bind(1, job_id).Bind(2, after_seq);
  std::vector<EventRow> out;
  while (s.Step()) {
    EventRow e{s.Int(0), s.Text(1), s.Double(2), s.Text(3), ""};
    FEDSILO_ASSIGN_OR_RETURN(e.message,
                             Secret(s, 4, "events.message", absl::StrCat(job_id, " ", e.seq)));
    out.push_back(std::move(e));
  }
  if (!s.ok()) return Error("reading events");
  return out;
}

StatusOr<int64_t> JobStore::Reseal(const std::string& path,
                                   std::shared_ptr<const FileSealer> sealer, bool seal_plain) {
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store, OpenAs(path, sealer, true));
  if (store->sealer_ == nullptr && !seal_plain) return 0;  // a plain store, left plain
  MutexLock lock(&store->mu_);
  // Every value is read as the store holds it and written back sealed with
  // the current key, in one transaction: all or nothing.
  FEDSILO_RETURN_IF_ERROR(store->Exec("BEGIN IMMEDIATE"));
  auto fail = [&](Status e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(store->mu_) {
    store->Exec("ROLLBACK").IgnoreError();
    return e;
  };
  struct Value {
    int64_t rowid;
    std::string row;
    std::string text;
    double number;
  };
  int64_t written = 0;
  for (const SecretColumn& c : kSecretColumns) {
    const std::string column = absl::StrCat(c.table, ".", c.column);
    std::vector<Value> values;
    {
      const std::string sql = absl::StrCat("SELECT rowid, ", c.row_key, ", ", c.column, " FROM ",
                                           c.table, c.where);
      Statement s(store->db_, sql.c_str());
      while (s.Step()) {
        Value v{s.Int(0), s.Text(1), "", 0};
        if (c.number) {
          StatusOr<double> n = store->SecretNumber(s, 2, column, v.row);
          if (!n.ok()) return fail(n.status());
          v.number = *n;
        } else {
          StatusOr<std::string> t = store->Secret(s, 2, column, v.row);
          if (!t.ok()) return fail(t.status());
          v.text = *std::move(t);
        }
        values.push_back(std::move(v));
      }
      if (!s.ok()) return fail(store->Error(absl::StrCat("reading ", column)));
    }
    const std::shared_ptr<const FileSealer> reader = store->sealer_;
    store->sealer_ = sealer;  // write sealed
    const std::string sql =
        absl::StrCat("UPDATE ", c.table, " SET ", c.column, " = ? WHERE rowid = ?");
    for (const Value& v : values) {
      Statement s(store->db_, sql.c_str());
      if (c.number) {
        store->BindSecretNumber(s, 1, v.number, column, v.row);
      } else {
        store->BindSecret(s, 1, v.text, column, v.row);
      }
      s.Bind(2, v.rowid);
      s.Step();
      if (!s.ok()) return fail(store->Error(absl::StrCat("re-encrypting ", column)));
      ++written;
    }
    store->sealer_ = reader;
  }
  store->sealer_ = sealer;
  Statement mark(store->db_, "UPDATE store_meta SET value = 1 WHERE key = 'encrypted'");
  mark.Step();
  if (!mark.ok()) return fail(store->Error("recording the store's encryption"));
  FEDSILO_RETURN_IF_ERROR(store->Exec("COMMIT"));
  // The old bytes (plain, or sealed under the old key) stay in free pages
  // and in the journal until both are rewritten.
  FEDSILO_RETURN_IF_ERROR(store->Exec("VACUUM"));
  FEDSILO_RETURN_IF_ERROR(store->Exec("PRAGMA wal_checkpoint(TRUNCATE)"));
  return written;
}

}  // namespace fedsilo::orchestrator
