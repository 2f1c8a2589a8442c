// PrivacyGuard: the silo's own privacy policy and ledger. The silo -- not the
// orchestrator, which it does not control -- decides whether a job may touch
// its data, and keeps a durable record of what each job has spent.
//
// policy.yaml (optional; without it every dataset has the defaults below):
//   allow_any_module: false  # true: run any TorchScript module a job ships
//                            # (test federations only; the silo warns)
//   defaults: {...}          # the keys below, for datasets not named here
//   datasets:
//     digits:
//       max_epsilon: 10      # the dataset's budget over all jobs, at `delta`
//       delta: 1e-5          # the budget's delta; a job asking more is refused
//       require_local_dp: true            # refuse jobs without privacy.dp.mode
//                                         # local (allow_non_dp: false says so too)
//       require_secure_aggregation: true  # refuse jobs without it
//       min_silos: 3         # refuse jobs whose federation.min_silos is smaller
//       max_evaluations_per_run: 20  # evaluate tasks a run may ask (default:
//                                    # twice its training.rounds, at most 200)
//       statistics: {min_count: 10, share_min_max: false}
//                            # refuse the statistics of a class or feature with
//                            # fewer than min_count values; send minima and
//                            # maxima only if share_min_max (minmax scaling needs them)
//       share_train_metrics: false  # send no training loss and accuracy
//                                   # (default: false under local DP or
//                                   # secure aggregation)
//       export_metrics: false  # this silo's metrics stay in the federation's
//                              # own run store: never sent to MLflow
//       allowed_models: [sha256:...]  # the TorchScript modules jobs may bring
//       vertical:            # vertical jobs (docs/vertical.md); refused without
//         allow: true        # this
//         columns: [a, b]    # the columns the party's bottom model may read
//                            # (default: the catalog's features)
//         max_peer_ids: 1000000  # the largest other party's set it blinds
//         min_intersection: 100  # the fewest people it aligns with the others
//         peers: [bank, telecom] # the only parties it takes part with
//
// The ledger (<state>/privacy-ledger.json, version 2) holds one entry per
// dataset and job run: the digest of the job admitted (a later task of the run
// with another job is refused), its DP-SGD plan (noise multiplier, sample
// rate, steps planned) and the steps taken so far, evaluations answered, and
// when, and the secure-aggregation sums it revealed shares for (round, model
// digest, survivors: a round is never summed twice over other silos). It is
// rewritten atomically and durably (fsync) before anything that
// spends leaves the silo: steps are charged before a round trains, so a crash
// never loses spending, and a restarted silo continues from the ledger.
//
// Budgets across jobs: a run's plan is reserved when it is admitted, so two
// jobs cannot both fit in what is left. Runs compose by Rényi DP (their RDP
// added order by order, then turned into epsilon at the budget's delta) when
// all were accounted by this accountant with the same orders; otherwise
// (entries of ledger version 1) by basic composition: epsilons add up, and so
// do deltas.
//
// Thread safety: all methods are thread-safe.
#ifndef FEDSILO_SILO_PRIVACY_GUARD_H_
#define FEDSILO_SILO_PRIVACY_GUARD_H_

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/job_config.h"
#include "core/mutex.h"
#include "core/status.h"
#include "secure/secagg.h"

namespace fedsilo::silo {

struct StatisticsPolicy {
  int64_t min_count = 10;      // a class or feature with fewer values is refused
  bool share_min_max = false;  // minima and maxima are single records' values
};

// Whether, and how, the dataset takes part in vertical jobs (docs/vertical.md).
struct VerticalPolicy {
  // Default deny: a vertical job tells each party which of its people the
  // others hold too.
  bool allow = false;
  // The columns its bottom model may read; empty: the catalog's features.
  std::vector<std::string> columns;
  // The most ids another party's set may hold for this silo to blind it.
  int64_t max_peer_ids = 1000000;
  // The fewest people an intersection may hold for it to take part.
  int64_t min_intersection = 100;
  // The parties it takes part with; empty: any of the federation's.
  std::vector<std::string> peers;
};

struct DatasetPolicy {
  double max_epsilon = 0;  // 0 = no budget
  double delta = 1e-5;
  bool require_local_dp = false;
  bool require_secure_aggregation = false;
  int min_silos = 1;
  int max_evaluations_per_run = 0;  // 0: twice the job's training.rounds, at most 200
  StatisticsPolicy statistics;
  std::optional<bool> share_train_metrics;  // unset: not under local DP or secure aggregation
  bool export_metrics = true;
  // SHA-256 digests of the TorchScript modules jobs may bring; empty = none
  // (unless the policy's allow_any_module).
  std::vector<std::string> allowed_models;
  VerticalPolicy vertical;

  // Whether the silo sends its training loss and accuracy for `job`.
  bool SharesTrainMetrics(const JobConfig& job) const;
  // The evaluate tasks a run of `job` may ask.
  int MaxEvaluations(const JobConfig& job) const;
};

// What a DP-SGD run will spend of one silo's data, fixed at admission.
struct DpPlan {
  double noise_multiplier = 0;
  double sample_rate = 0;
  int64_t planned_steps = 0;  // over the whole job
  int64_t steps_per_round = 0;
  double delta = 0;
};

// The plan of `job` (privacy.dp.mode local) on `train_rows` training rows:
// its noise multiplier (given, or solved from target_epsilon over the whole
// job), sample rate and steps. InvalidArgument naming the key when none fits.
StatusOr<DpPlan> PlanDp(const JobConfig& job, int64_t train_rows);

// How the ledger accounts a DP-SGD run: RDP of the sampled Gaussian mechanism
// at the default orders. Entries with another (or none) compose basically.
inline constexpr const char* kLedgerAccountant = "rdp-sampled-gaussian/default-orders";

struct LedgerEntry {
  std::string dataset;
  std::string run_id;
  std::string job_digest;         // the job admitted, without its statistics
  std::string statistics_digest;  // the statistics its tasks carry; "" until seen
  bool dp = false;                // false: no DP, an unbounded epsilon
  std::string accountant;         // kLedgerAccountant, or "" (basic only)
  double noise_multiplier = 0;
  double sample_rate = 0;
  int64_t planned_steps = 0;
  int64_t steps = 0;  // charged so far; never goes down
  double delta = 0;
  // Epsilon at `delta` of the steps so far and of the whole plan (+inf without
  // DP). For entries without an accountant, as recorded.
  double epsilon = 0;
  double planned_epsilon = 0;
  int evaluations = 0;
  // The secure-aggregation sums this silo revealed its shares for.
  std::vector<secure::SecAggReveal> reveals;
  double first = 0;  // Unix seconds
  double last = 0;
};

// One ledger entry as the ledger file and `fedsilo silo ledger --json` write
// it (epsilon null for a job without DP).
nlohmann::json LedgerEntryToJson(const LedgerEntry& entry);

// Several runs' spending of one dataset, composed.
struct BudgetUse {
  double epsilon = 0;  // +inf when a run had no DP
  double delta = 0;
  std::string composition;  // "RDP" or "basic"
};

class PrivacyGuard {
 public:
  // `policy_path` may be empty (no policy: the defaults). `ledger_path`
  // empty keeps the ledger in memory (a simulation without --silo-policy);
  // otherwise it is created on the first record. InvalidArgument naming the
  // file for a bad policy or ledger.
  static StatusOr<std::unique_ptr<PrivacyGuard>> Open(const std::string& policy_path,
                                                      const std::string& ledger_path);

  // The rules for `dataset`: its entry in the policy, or the defaults.
  const DatasetPolicy& PolicyFor(const std::string& dataset) const;
  bool allow_any_module() const { return allow_any_module_; }
  const std::map<std::string, DatasetPolicy>& policy() const { return policy_; }

  // The checks that need no data, made before any is read or any model
  // loaded: the policy's requirements (local DP, secure aggregation, silos,
  // delta) and, for a run already admitted, that `job` is the job it was
  // admitted with. FailedPrecondition naming the policy's key.
  Status CheckJob(const std::string& dataset, const std::string& run_id,
                  const JobConfig& job) const;
  // Whether a job on `dataset` may bring the TorchScript module with this
  // SHA-256 (hex): listed in allowed_models, or allow_any_module.
  // FailedPrecondition naming the key otherwise.
  Status CheckModel(const std::string& dataset, const std::string& digest) const;

  // Admits `run_id` (CheckJob first). A new run's plan (`dp`, null without
  // DP) is checked against the budget with every other run's plan reserved,
  // then recorded durably with the job's digest; a refused run is not
  // recorded. A run already admitted gets its recorded entry back: the plan
  // fixed then, and the steps it has taken.
  StatusOr<LedgerEntry> Admit(const std::string& dataset, const std::string& run_id,
                              const JobConfig& job, const DpPlan* dp);
  // Charges `steps` DP-SGD steps to an admitted run before they are taken:
  // refused (FailedPrecondition, nothing charged) when they would go past the
  // run's plan or the budget; durable when it returns OK.
  StatusOr<LedgerEntry> Charge(const std::string& dataset, const std::string& run_id,
                               int64_t steps);
  // Counts an evaluate task of an admitted run; refused past the policy's
  // max_evaluations_per_run.
  Status CountEvaluation(const std::string& dataset, const std::string& run_id,
                         const JobConfig& job);
  // The statistics a run's tasks carry are pinned like its job: the first
  // training or evaluate task's are recorded, a later task's must match.
  Status PinStatistics(const std::string& dataset, const std::string& run_id,
                       const std::string& digest);

  // Records, durably, that this silo reveals its secure-aggregation shares
  // for `reveal` of an admitted run; refused (FailedPrecondition) when a reveal
  // of that round, or of any run's updates from the same global model, was
  // over other silos (secure::CheckSecondReveal).
  Status RecordSecAggReveal(const std::string& dataset, const secure::SecAggReveal& reveal);

  // The ledger's generation: how many times it has been saved (0 before the
  // first save). Each save writes the next one into the ledger.
  int64_t generation() const;
  // How many entries the audit log had at the ledger's last save (0 when
  // none was attached then).
  int64_t audited_entries() const;
  // Ties the ledger to the silo's audit log: before every save, `entries`
  // gives the log's entry count, written into the ledger (a log cut back
  // below it, or removed, is caught at startup); after it, `saved` gets the
  // new generation, which the silo records in the log (an older copy of the
  // ledger put back is caught at startup). Both run under the guard's lock.
  void SetAuditTrail(std::function<int64_t()> entries, std::function<void(int64_t)> saved);

  std::vector<LedgerEntry> Entries() const;
  // What the runs on `dataset` have spent so far (`reserved`: what their
  // plans would spend), composed.
  BudgetUse Use(const std::string& dataset, bool reserved = false) const;

 private:
  PrivacyGuard() = default;
  Status Save() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  LedgerEntry* Find(const std::string& dataset, const std::string& run_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The runs on `dataset` composed, `extra` in place of the ledger's entry
  // of its run and without `skip_run`.
  BudgetUse UseLocked(const std::string& dataset, bool reserved, const LedgerEntry* extra = nullptr,
                      const std::string& skip_run = "") const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Status CheckBudget(const std::string& dataset, const LedgerEntry* extra) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  bool allow_any_module_ = false;
  DatasetPolicy defaults_;
  std::map<std::string, DatasetPolicy> policy_;
  std::string ledger_path_;
  mutable Mutex mu_;
  std::vector<LedgerEntry> entries_ ABSL_GUARDED_BY(mu_);
  mutable int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Save() moves it on
  mutable int64_t audited_entries_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<int64_t()> audit_entries_ ABSL_GUARDED_BY(mu_);
  std::function<void(int64_t)> saved_ ABSL_GUARDED_BY(mu_);
};

// The rules `guard` applies to `dataset`; the defaults without a guard (a
// silo without a policy file, or a test's agent).
const DatasetPolicy& RulesFor(const PrivacyGuard* guard, const std::string& dataset);

// The digest a run's job is pinned by: SHA-256 of the resolved job without
// its federated statistics (which arrive after the first task), hex. Over
// the job in the oldest schema that carries it, so that a silo upgraded
// during a run still knows the run's job.
std::string PinnedJobDigest(const JobConfig& job);
// The digest of the job's statistics ("" when it has none).
std::string StatisticsDigest(const JobConfig& job);

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_PRIVACY_GUARD_H_
