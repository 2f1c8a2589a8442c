// MlflowExport: a job's run sent to MLflow when its `tracking.mlflow.uri` is
// set, for the orchestrator's jobs and `fedsilo run` alike. The MLflow run is
// named after fedsilo's run id and tagged with it; its parameters are the
// resolved job, flattened ("training.learning_rate"); its metrics are the
// run's, step = round, except those a silo's policy keeps private. A job that
// is resumed continues its MLflow run (<run dir>/mlflow_run_id).
//
// Reaching MLflow never decides a job's fate: problems are logged, calls are
// retried in the background, and the run store keeps every metric.
#ifndef FEDSILO_ORCHESTRATOR_MLFLOW_EXPORT_H_
#define FEDSILO_ORCHESTRATOR_MLFLOW_EXPORT_H_

#include <chrono>
#include <memory>
#include <string>

#include "core/job_config.h"
#include "orchestrator/job_store.h"
#include "tracking/mlflow_exporter.h"
#include "tracking/run_directory.h"

namespace fedsilo::orchestrator {

class MlflowExport {
 public:
  // Null when the job asks for no export (or, logged, when it cannot start).
  static std::unique_ptr<MlflowExport> Start(const JobConfig& job, const JobRecord& record,
                                             const tracking::RunDirectory& run_dir);

  tracking::MetricsSink* sink() { return exporter_.get(); }

  // Ends the MLflow run as `state` says: FINISHED (with the final model and
  // the job as artifacts, unless tracking.mlflow.log_model is false), FAILED,
  // KILLED, or left RUNNING for a job to be resumed. Waits for the backlog at
  // most tracking.mlflow.wait, or `max_wait` when that is shorter.
  tracking::MlflowExportReport Finish(
      JobState state, std::chrono::milliseconds max_wait = std::chrono::milliseconds::max());

 private:
  MlflowExport(std::unique_ptr<tracking::MlflowExporter> exporter, MlflowConfig config,
               tracking::RunDirectory run_dir);

  std::unique_ptr<tracking::MlflowExporter> exporter_;
  MlflowConfig config_;
  tracking::RunDirectory run_dir_;
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_MLFLOW_EXPORT_H_
