// PrivacyGuard: the silo's own privacy policy and ledger. The silo -- not the
// orchestrator, which it does not control -- decides whether a job may touch
// its data, and keeps a durable record of what each job has spent.
//
// policy.yaml (optional; datasets it does not name have no limits):
//   datasets:
//     digits:
//       max_epsilon: 10      # total epsilon over all jobs (summed), at `delta`
//       delta: 1e-5          # jobs asking for a larger delta are refused
//       allow_non_dp: false  # refuse jobs without privacy.dp.mode local
//       min_silos: 3         # refuse jobs whose federation.min_silos is smaller
//       export_metrics: false  # this silo's metrics stay in the federation's
//                              # own run store: never sent to MLflow
//       allowed_models: [sha256:...]  # TorchScript modules jobs may bring
//
// The ledger (<state>/privacy-ledger.json, version 1, rewritten atomically
// after every round) holds, per dataset and job run, the epsilon spent so far,
// its delta and when. Totals compose by summing epsilons (and deltas).
//
// Thread safety: all methods are thread-safe.
#ifndef FEDSILO_SILO_PRIVACY_GUARD_H_
#define FEDSILO_SILO_PRIVACY_GUARD_H_

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/job_config.h"
#include "core/status.h"

namespace fedsilo::silo {

struct DatasetPolicy {
  double max_epsilon = 0;  // 0 = no budget
  double delta = 1e-5;
  bool allow_non_dp = true;
  int min_silos = 1;
  bool export_metrics = true;
  // SHA-256 digests of the TorchScript modules jobs may bring; empty = any.
  std::vector<std::string> allowed_models;
};

struct LedgerEntry {
  std::string dataset;
  std::string run_id;
  double epsilon = 0;
  double delta = 0;
  double first = 0;  // Unix seconds
  double last = 0;
};

// One ledger entry as the ledger file and `fedsilo silo ledger --json` write
// it (epsilon null for a job without DP).
nlohmann::json LedgerEntryToJson(const LedgerEntry& entry);

class PrivacyGuard {
 public:
  // `policy_path` may be empty (no policy). The ledger file is created on the
  // first record. InvalidArgument naming the file for a bad policy or ledger.
  static StatusOr<std::unique_ptr<PrivacyGuard>> Open(const std::string& policy_path,
                                                      const std::string& ledger_path);

  // Decides before any training whether `run_id` may use `dataset`;
  // `planned_epsilon` is what the whole job would spend (infinite without
  // DP). FailedPrecondition with the reason when the policy refuses it; a
  // refused job is not recorded. A run already admitted is admitted again.
  Status Admit(const std::string& dataset, const std::string& run_id, const JobConfig& job,
               double planned_epsilon);
  // Records what `run_id` has spent of `dataset` so far (replaces its entry).
  Status Record(const std::string& dataset, const std::string& run_id, double epsilon,
                double delta);

  // Whether the silo's metrics of a job on `dataset` may leave the federation
  // (tracking.mlflow); true for datasets the policy does not name.
  bool ExportsMetrics(const std::string& dataset) const;
  // Whether a job on `dataset` may bring the TorchScript module with this
  // SHA-256 (hex); true unless the policy lists allowed_models for it.
  bool AcceptsModel(const std::string& dataset, const std::string& digest) const;

  std::vector<LedgerEntry> Entries() const;
  // Sum of epsilons spent on `dataset` by runs other than `except_run`.
  double Spent(const std::string& dataset, const std::string& except_run = "") const;
  const std::map<std::string, DatasetPolicy>& policy() const { return policy_; }

 private:
  PrivacyGuard() = default;
  Status Save() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::map<std::string, DatasetPolicy> policy_;
  std::string ledger_path_;
  mutable std::mutex mu_;
  std::vector<LedgerEntry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_PRIVACY_GUARD_H_
