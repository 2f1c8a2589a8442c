// JobStore: the orchestrator's durable record of jobs, their rounds, metrics
// and events, in one SQLite file (<state>/fedsilo.db). Every change is a
// committed transaction (WAL, synchronous=FULL), so a killed orchestrator
// loses nothing that was reported as done.
//
// The schema carries a version; opening a store written by a newer fedsilo is
// a FailedPrecondition error naming the file.
//
// Encryption at rest: a store created while a FileSealer is installed
// (core/file_seal.h; the CLI installs one when a storage key ring is
// configured) is an encrypted store. Every value derived from the silos' data
// or words, or deciding who may read what, is then sealed, each bound to the
// store's random id and its place ("fedsilo.db <id> metrics.value job-3 7
// a/accuracy"): resolved jobs (statistics), errors, round failures, metric
// values, the silos' states, example counts and privacy spent, event
// messages, each job's owner, run and state. What stays readable is what the
// orchestrator needs to find rows and nothing a silo's records decide: ids,
// job and metric names, round numbers, counts of rounds and silos, times. An encrypted
// store opened without the ring, a plain one opened with it, or a plain value
// in an encrypted store is InvalidArgument / DataLoss naming the file.
// docs/encryption-at-rest.md says why the store seals values and not pages
// (SQLCipher).
//
// Rollback: the store's sealed state holds a generation, raised by every job
// created and round recorded, with the highest row of each table that only
// grows; a store with fewer rows than its state records (an older copy with
// a newer state copied in) is DataLoss at Open. With an audit trail set
// (SetAuditTrail), each raise is also written to the audit log, and the store
// records how long the log was; the owner compares the two at start
// (secure::CheckAgainstAuditLog), so an older copy of the store, or a cut
// log, is found.
//
// Thread safety: all methods are thread-safe (one connection, one mutex).
#ifndef FEDSILO_ORCHESTRATOR_JOB_STORE_H_
#define FEDSILO_ORCHESTRATOR_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/file_seal.h"
#include "core/mutex.h"
#include "core/status.h"

struct sqlite3;

namespace fedsilo::orchestrator {

enum class JobState { kQueued, kRunning, kDone, kFailed, kAborted };

absl::string_view JobStateName(JobState state);
// The state named by JobStateName; kFailed for any other name.
JobState ParseJobState(absl::string_view name);
bool IsFinished(JobState state);

struct JobRecord {
  std::string id;        // "job-<n>"
  std::string name;      // the job file's `name`
  std::string owner;     // the submitting user's certificate name
  std::string job_yaml;  // resolved
  std::string run_id;    // the run directory's name under <state>/runs
  JobState state = JobState::kQueued;
  int rounds_total = 0;
  int rounds_completed = 0;
  double created = 0;  // Unix seconds; 0 when not yet
  double started = 0;
  double finished = 0;
  std::string error;  // why it failed or was aborted
  bool abort_requested = false;
  std::string experiment = "default";  // the job's `experiment`
};

struct RoundRecord {
  int round = 0;
  double finished = 0;
  double seconds = 0;
  int silos_sampled = 0;
  int silos_succeeded = 0;
  std::vector<std::string> failures;  // "silo: reason"
};

struct MetricRow {
  int round = 0;
  std::string source;  // a silo name or "global"
  std::string name;    // "{source}/{metric}"
  double value = 0;
  double time = 0;
};

// One silo's part in one job, kept up to date as rounds are recorded.
struct SiloRow {
  std::string silo;
  std::string state;     // "waiting", "ok", or "dropped: <reason>" (the last round's outcome)
  double last_seen = 0;  // Unix seconds of its last reported metric; 0 = never
  int rounds = 0;        // rounds it took part in
  int64_t examples = 0;  // training examples it reported last
  double epsilon = -1;   // privacy spent so far (local DP); -1 = not reported
};

struct EventRow {
  int64_t seq = 0;
  std::string job_id;
  double time = 0;
  std::string level;  // "info", "warn", "error"
  std::string message;
};

class JobStore {
 public:
  // 1: jobs, rounds, metrics, events. 2: jobs.experiment, job_silos.
  // 3: store_meta (encryption, generation).
  static constexpr int kSchemaVersion = 3;

  // Opens or creates the store, migrating an older schema in place (one
  // transaction), encrypted as the installed FileSealer says (see above).
  // Internal naming the file when SQLite fails; FailedPrecondition when the
  // file was written by a newer schema.
  static StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  // The same with `sealer` (null: none) instead of the installed one.
  static StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path,
                                                  std::shared_ptr<const FileSealer> sealer);
  ~JobStore();

  // Re-seals every sealed value of the store at `path` with `sealer` (its
  // current key), in one transaction; with `seal_plain`, encrypts a plain
  // store. Returns the number of values written; 0 for a plain store left
  // plain. Errors name the file and the value that does not open.
  static StatusOr<int64_t> Reseal(const std::string& path,
                                  std::shared_ptr<const FileSealer> sealer, bool seal_plain);

  const std::string& path() const { return path_; }
  bool encrypted() const { return sealer_ != nullptr; }

  // Called, under the store's lock, as a generation is committed:
  // `entries()` (the audit log's length, recorded with it) before, `saved(g)`
  // (which appends an audit entry recording g) after.
  void SetAuditTrail(std::function<int64_t()> entries, std::function<void(int64_t)> saved);
  int64_t generation() const;
  int64_t audited_entries() const;

  // Adds a queued job and returns it with its new id.
  StatusOr<JobRecord> CreateJob(JobRecord job);
  // NotFound naming the id.
  StatusOr<JobRecord> GetJob(const std::string& id) const;
  // All jobs, oldest first.
  StatusOr<std::vector<JobRecord>> ListJobs() const;

  // Sets state (and `error`, `started` / `finished` as the state implies).
  Status SetState(const std::string& id, JobState state, const std::string& error = "");
  Status SetRunId(const std::string& id, const std::string& run_id);
  // The resolved job, once the federated statistics completed it.
  Status SetJobYaml(const std::string& id, const std::string& job_yaml);
  // Marks the job for stopping, with `reason` as its error.
  Status RequestAbort(const std::string& id, const std::string& reason);

  // Lists the job's silos (state "waiting") before its first round.
  Status AddSilos(const std::string& id, const std::vector<std::string>& silos);
  StatusOr<std::vector<SiloRow>> Silos(const std::string& id) const;

  // Records a finished round, its metrics, the job's new round count and its
  // silos' part (from their "{silo}/num_examples" and "{silo}/epsilon" metrics
  // and the round's failures, "silo: reason") in one transaction.
  // AlreadyExists if the round was recorded before.
  Status CompleteRound(const std::string& id, const RoundRecord& round,
                       const std::vector<MetricRow>& metrics);
  StatusOr<std::vector<RoundRecord>> Rounds(const std::string& id) const;
  // The latest value of every metric of the job (by metric name).
  StatusOr<std::map<std::string, MetricRow>> LatestMetrics(const std::string& id) const;
  StatusOr<std::vector<MetricRow>> Metrics(const std::string& id) const;

  Status AddEvent(const std::string& job_id, const std::string& level, const std::string& message);
  // Events of the job with seq > after_seq, oldest first.
  StatusOr<std::vector<EventRow>> Events(const std::string& job_id, int64_t after_seq) const;

 private:
  class Statement;
  JobStore(sqlite3* db, std::string path, std::shared_ptr<const FileSealer> sealer);
  static StatusOr<std::unique_ptr<JobStore>> OpenAs(const std::string& path,
                                                    std::shared_ptr<const FileSealer> sealer,
                                                    bool any_mode);
  Status Exec(const std::string& sql) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Status Error(absl::string_view what) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The name a value is sealed under: "<store> <table>.<column> <row key>".
  std::string FieldName(absl::string_view column, absl::string_view row) const;
  // Binds `text` at `i`, sealed under FieldName(column, row) in an encrypted
  // store; the same for a number (plain stores keep a REAL).
  void BindSecret(Statement& s, int i, absl::string_view text, absl::string_view column,
                  absl::string_view row) const;
  void BindSecretNumber(Statement& s, int i, double value, absl::string_view column,
                        absl::string_view row) const;
  // Reads what BindSecret / BindSecretNumber wrote.
  StatusOr<std::string> Secret(const Statement& s, int col, absl::string_view column,
                               absl::string_view row) const;
  StatusOr<double> SecretNumber(const Statement& s, int col, absl::string_view column,
                                absl::string_view row) const;
  // Raises the generation inside the open transaction (and records the
  // audit log's length); Committed() reports it once committed.
  Status RaiseGeneration() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Status Commit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The store's id and sealed state (generation, audit log length, highest
  // rows), checked against the rows it holds; `encrypted` is the store's mark.
  Status ReadMeta(bool encrypted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Status WriteState(int64_t generation, int64_t audited_entries) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  StatusOr<std::vector<int64_t>> HighestRows() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  StatusOr<std::optional<SiloRow>> SiloLocked(const std::string& id, const std::string& silo) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Status PutSilo(const std::string& id, const SiloRow& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every job, or (with `where_id`) the one with that id; an empty id is
  // nobody's, not everybody's.
  StatusOr<std::vector<JobRecord>> QueryJobs(const std::string* where_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  std::string path_;
  std::string name_;  // SealedName(path_)
  // Null for a plain store. Set at Open (Reseal sets it on a plain store).
  std::shared_ptr<const FileSealer> sealer_;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t audited_entries_ ABSL_GUARDED_BY(mu_) = 0;
  std::string store_id_;  // set at Open
  // Set when the open transaction raised the generation: the audit log
  // length recorded with it.
  std::optional<int64_t> raised_ ABSL_GUARDED_BY(mu_);
  std::function<int64_t()> audit_entries_ ABSL_GUARDED_BY(mu_);
  std::function<void(int64_t)> audit_saved_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_JOB_STORE_H_
