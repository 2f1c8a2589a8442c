// JobRun: one job run to its end, the same way wherever its silos are: in this
// process (`fedsilo run`), in processes of their own (`fedsilo run
// --processes`) or across the federation (the orchestrator daemon's queue).
// What differs is given to it: how the silos are reached (SiloReach) and how
// the job's model is made (JobPreparer).
//
// A run:
//   1. Begin(): makes the run's folder (or opens it again, for a job that
//      was interrupted), writes job.yaml, records the run id in the store
//      and starts the MLflow export;
//   2. Run(): prepares the model (a job on the silos' own data first asks
//      them for its federated statistics, and records the completed job),
//      reaches the silos, and runs the rounds after the last committed one.
//      Each finished round is made durable by one observer before the next
//      starts: the global model as a checkpoint and the strategy's state
//      beside it, then the round, its metrics and the round count in the
//      store, in one transaction. A run interrupted anywhere resumes from
//      there, and ends with the model of a run nobody interrupted.
//   3. FinishTracking(): ends the MLflow run as the job ended.
//
// Layout of a run's folder (<state_dir>/runs/<run_id>/):
//   job.yaml             the job as it runs (with its statistics once known)
//   metrics.jsonl        every metric, one JSON object per line
//   checkpoints/         round-NNNN.fsm (and round-NNNN.strategy.fsm for
//                        strategies with state) that checkpoint.every keeps
//   final_model.fsm      (and final_model.pt for a TorchScript job)
//   lock                 held while a JobRun has the folder: one run at a time
//
// Thread safety: one thread uses a JobRun; the `stop` flag may be raised from
// any other.
#ifndef FEDSILO_ORCHESTRATOR_JOB_RUN_H_
#define FEDSILO_ORCHESTRATOR_JOB_RUN_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/file_lock.h"
#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"
#include "orchestrator/job_store.h"
#include "orchestrator/metrics.h"
#include "orchestrator/mlflow_export.h"
#include "orchestrator/orchestrator.h"
#include "orchestrator/vertical_run.h"
#include "secure/audit_log.h"
#include "tracking/jsonl_metrics_sink.h"
#include "tracking/run_directory.h"
#include "transport/silo_connection.h"

namespace fedsilo::orchestrator {

// What a job needs that the orchestrator module cannot make itself (models
// and data live in `ml`): the initial global model and the evaluator of the
// global model.
struct PreparedJob {
  ModelState initial;
  // Null for a job on the silos' own data: the silos score the global model.
  std::unique_ptr<ModelEvaluator> evaluator;
  // model.torchscript jobs: writes a state as the job's TorchScript module.
  std::function<Status(const ModelState& state, const std::string& path)> save_torchscript;
  // The model in a few words ("mlp 784-200-200-10, 199210 parameters").
  std::string description;
};

class JobPreparer {
 public:
  virtual ~JobPreparer() = default;
  // Invalid input (naming the key) when the job cannot run here.
  virtual StatusOr<PreparedJob> Prepare(const JobConfig& job) = 0;
};

// How a run reaches its silos.
class SiloReach {
 public:
  virtual ~SiloReach() = default;
  // One connection per silo of `job`, in the job's order, once they can be
  // reached: starting them, or waiting for them to connect. `run_dir` is the
  // run's folder (for the silos' logs).
  virtual StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> Connect(
      const JobConfig& job, const tracking::RunDirectory& run_dir) = 0;
  // The CA that signed the silos' certificates (PEM), once Connect() has
  // succeeded; empty for silos in this process.
  virtual std::string federation_ca_pem() const { return std::string(); }
};

struct JobRunOptions {
  int threads = 1;  // silos asked at the same time
  // When raised, the run stops before its next round (Cancelled).
  const std::atomic<bool>* stop = nullptr;
  secure::AuditLog* audit = nullptr;       // may be null
  OrchestratorMetrics* metrics = nullptr;  // may be null
  // model.torchscript jobs: the module's bytes, shipped to the silos.
  std::string torchscript;
  // What the run has to say ("info", "warn") besides its rounds. Null: the
  // run store's events only.
  std::function<void(const std::string& level, const std::string& message)> event;
  // Told about each round once it is durable (may be null).
  RoundObserver* progress = nullptr;
  // Called once the job's model is made, before the first round (may be null).
  std::function<void(const JobConfig& job, const PreparedJob& prepared)> prepared;
};

class JobRun {
 public:
  // Makes the run's folder under `state_dir` for `record` (writing
  // record.job_yaml as its job.yaml and the run id into the store), or opens
  // it again when the record has one, and reads the record again once it
  // holds the folder; FailedPrecondition while another JobRun, in any
  // process, has it. `job` is record.job_yaml, parsed. `store` must outlive
  // the run.
  static StatusOr<std::unique_ptr<JobRun>> Begin(const std::string& state_dir, JobStore* store,
                                                 JobRecord record, JobConfig job);

  const tracking::RunDirectory& run_dir() const { return run_dir_; }
  // The store's record as the run began (its rounds completed, its state).
  const JobRecord& record() const { return record_; }
  // The job as it runs (with its federated statistics once computed).
  const JobConfig& job() const { return job_; }
  // Whether the run's metrics go to an MLflow server too.
  bool exports_to_mlflow() const { return mlflow_ != nullptr; }

  // Runs the rounds after the record's last committed one to the job's end,
  // and writes the final model. Fails with the round and the silos' reasons;
  // Cancelled when options.stop is raised (the committed rounds stay, and a
  // later Begin() and Run() of the same record go on from them).
  StatusOr<RunResult> Run(SiloReach* reach, JobPreparer* preparer, const JobRunOptions& options);

  // A vertical job (orchestrator/vertical_run.h) with `parties` in the
  // job's order: the intersection, then every round, each recorded as a
  // horizontal job's (metrics, events, progress). The models stay with the
  // parties. A vertical run cannot go on from a stopped one
  // (FailedPrecondition): run its job again.
  StatusOr<VerticalResult> RunVertical(const std::vector<transport::VerticalParty*>& parties,
                                       const JobRunOptions& options);

  // Ends the MLflow export (MlflowExport::Finish); nothing when the job
  // exports nowhere.
  std::optional<tracking::MlflowExportReport> FinishTracking(
      JobState state, std::chrono::milliseconds max_wait = std::chrono::milliseconds::max());

 private:
  JobRun(JobStore* store, JobRecord record, JobConfig job, tracking::RunDirectory run_dir,
         FileLock lock, std::unique_ptr<tracking::JsonlMetricsSink> jsonl);
  // The model of the last committed round (or `initial`), and the strategy's
  // state then (empty when it keeps none). Refuses a checkpoint of another
  // job or round, of another model, or without the strategy state it says
  // it has beside it.
  StatusOr<ModelState> Resume(ModelState initial, ModelState* strategy_state) const;
  void Event(const JobRunOptions& options, const std::string& level, const std::string& message);

  JobStore* store_;
  JobRecord record_;
  JobConfig job_;
  tracking::RunDirectory run_dir_;
  FileLock lock_;
  std::unique_ptr<tracking::JsonlMetricsSink> jsonl_;
  std::unique_ptr<MlflowExport> mlflow_;
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_JOB_RUN_H_
