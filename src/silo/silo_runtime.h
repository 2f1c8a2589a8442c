// SiloRuntime: a silo agent process's handler for tasks from the
// orchestrator. It owns the silo's dataset catalog — dataset *names* mapped to
// local data, which never leave the silo — and trains with a SiloAgent per
// job run.
//
// datasets.yaml:
//   datasets:
//     digits:
//       builtin: digits   # a built-in data set in the silo's data folder
//       share: job        # optional: train on this silo's share of it, split
//                         # as the job partitions it across federation.silos
//                         # (a federation simulated with processes on one
//                         # machine); without it the whole set is the silo's
//     transactions:
//       csv: east.csv      # a CSV file with a header (relative to this file;
//                          # "{silo}" in it is replaced by the silo's name)
//       label: is_fraud    # the column of classes 0, 1, ...
//       features: [...]    # optional: the feature columns, in order
//                          # (default: every other column)
//       categorical: [merchant]  # one-hot, with the job's preprocess.categories
//       missing: error     # error | drop (the row) | impute (the federation's mean)
//     scans:
//       idx: scans/        # a folder with one IDX images file and one IDX
//                          # labels file (names holding "images" and "labels")
//
// A CSV dataset's rows are split (seeded by the job) into the silo's training
// and test rows, and prepared with the job's `preprocess` section before
// training; its statistics task (TaskKind::kStatistics) answers with the sums
// of the training rows, admitted by the silo's policy like a training job.
//
// Thread safety: one task at a time (the orchestrator never sends two).
#ifndef FEDSILO_SILO_SILO_RUNTIME_H_
#define FEDSILO_SILO_SILO_RUNTIME_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/busy_clock.h"
#include "ml/tabular.h"
#include "secure/audit_log.h"
#include "silo/dataset_catalog.h"
#include "silo/silo_agent.h"
#include "silo/vertical_party.h"
#include "transport/silo_connection.h"

namespace fedsilo::silo {

class PrivacyGuard;

class SiloRuntime : public transport::SiloHandler {
 public:
  // `guard` (not owned; may be null) applies the silo's privacy policy.
  SiloRuntime(std::string silo_name, DatasetCatalog catalog, std::string data_dir,
              PrivacyGuard* guard = nullptr);

  // Records every task received (model and job digests), what was sent back
  // (update or secure-aggregation reply digests) and every refusal with its
  // reason in `audit` (not owned; may be null).
  void SetAuditLog(secure::AuditLog* audit) { audit_ = audit; }
  // What the silo signs its secure-aggregation keys with, and checks the other
  // silos' against (SecAggSilo::SetIdentity). Without it, none are signed.
  void SetSecAggIdentity(std::shared_ptr<const secure::SecAggIdentity> identity) {
    secagg_identity_ = std::move(identity);
  }
  // Where per-run state lives (SCAFFOLD's control variates).
  void SetStateDir(std::string dir) { state_dir_ = std::move(dir); }
  // TorchScript modules (model.torchscript) the silo may load: files under
  // this folder. Empty (the default): jobs with one are refused.
  void SetModelsDir(std::string dir) { models_dir_ = std::move(dir); }
  // Where TorchScript modules run (not owned; may be null: jobs with one are
  // refused).
  void SetSandbox(const ml::Sandbox* sandbox) { sandbox_ = sandbox; }

  // Dataset names only, for the hello message.
  std::vector<std::string> DatasetNames() const;

  // NotFound naming the dataset when the catalog lacks the job's dataset.
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& request) override;
  // FailedPrecondition unless this silo trained for the step's run.
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest& request) override;
  // A step of a vertical job (transport/vertical_wire.h). The step that opens
  // a run is checked against the policy (datasets.<d>.vertical: allow,
  // peers, then the rest of the dataset's rules), once per run, and the run
  // admitted in the ledger; the party reads only the columns the policy
  // exposes. Once the last round ended, the party's models are kept in
  // <state>/vertical/<run>/. Up to four runs are open at once.
  StatusOr<std::string> VerticalStep(const transport::VerticalStepRequest& request) override;

 private:
  // What VerticalStep() does, before it is audited.
  StatusOr<std::string> HandleVertical(const transport::VerticalStepRequest& request,
                                       std::string* audit_event,
                                       std::map<std::string, std::string>* audit_fields);
  // Opens the party's side of run `run_id` of `job` (once: the ledger keeps
  // the runs it opened), with the job's TorchScript module when it came
  // with the step (null otherwise).
  Status OpenVertical(const std::string& run_id, const JobConfig& job,
                      const std::string* torchscript);
  // Keeps the party's models once the run's last round ended.
  Status KeepVerticalModels(const std::string& run_id, const VerticalPartyAgent& agent) const;
  // What RunTask() does, before it is audited.
  StatusOr<transport::FitReply> Handle(const transport::TaskRequest& request);
  // An agent for `run_id` on the job's dataset; `module`: where the job's
  // TorchScript module is on this silo ("" for the built-in models).
  StatusOr<std::unique_ptr<SiloAgent>> MakeAgent(const JobConfig& job, const std::string& run_id,
                                                 const std::string& module);
  StatusOr<std::unique_ptr<SiloAgent>> FinishAgent(ml::SiloData data, const JobConfig& job,
                                                   const std::string& run_id,
                                                   const std::string& module);
  // A CSV dataset's rows, split into training and test rows as the job says.
  struct TableSplit {
    ml::TabularData train, test;
  };
  StatusOr<TableSplit> ReadTable(const DatasetEntry& entry, const JobConfig& job) const;
  // An IDX folder's images, split into training and test images likewise;
  // labels must be below `num_classes` (0: any byte).
  StatusOr<ml::DatasetSplits> ReadImages(const DatasetEntry& entry, const JobConfig& job,
                                         int num_classes) const;
  // A dataset of `count` rows or images too small for the job's split; the
  // file or folder `where` stays in the error's private detail.
  Status TooFewToSplit(const JobConfig& job, int64_t count, const char* what,
                       const std::string& where) const;
  // The statistics task: the sums of the training rows, as the policy allows.
  StatusOr<transport::FitReply> Statistics(const JobConfig& job, const std::string& run_id);
  // The catalog's entry for `dataset`; NotFound naming what the silo offers.
  StatusOr<const DatasetEntry*> Entry(const std::string& dataset) const;
  // Where the job's TorchScript module is on this silo ("" for the built-in
  // models): a module that came with the task (named "sha256:<hex>") checked
  // against the policy (default deny) and its digest and kept in
  // <state>/models/; a module named by path only from --models-dir.
  StatusOr<std::string> ModulePath(const transport::TaskRequest& request);
  // The same for `job`, whose module came as `torchscript` (null: did not).
  StatusOr<std::string> ModulePath(const JobConfig& job, const std::string* torchscript);

  std::string silo_name_;
  DatasetCatalog catalog_;
  std::string data_dir_;
  PrivacyGuard* guard_;
  std::string agent_run_id_;  // the run `agent_` was built for
  std::unique_ptr<SiloAgent> agent_;
  secure::AuditLog* audit_ = nullptr;
  std::string state_dir_;
  std::string models_dir_;
  const ml::Sandbox* sandbox_ = nullptr;
  std::shared_ptr<const secure::SecAggIdentity> secagg_identity_;
  // The vertical run this silo takes part in, and its side of it.
  struct VerticalRun {
    std::unique_ptr<VerticalPartyAgent> agent;
    bool last_round = false;  // its last round has begun
  };
  std::map<std::string, VerticalRun> vertical_runs_;
  std::vector<std::string> vertical_order_;  // the runs open, oldest first
};

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_SILO_RUNTIME_H_
