// RunDirectory: the folder that holds everything one run produced:
//   <workdir>/runs/<run_id>/
//     job.yaml          the resolved job (defaults and --set overrides applied)
//     metrics.jsonl     one JSON object per metric and round
//     checkpoints/round-0003.fsm   the global model after round 3
//     final_model.fsm   the global model after the last round
//     summary.json      the run's summary (also printed by `fedsilo run --json`)
#ifndef FEDSILO_TRACKING_RUN_DIRECTORY_H_
#define FEDSILO_TRACKING_RUN_DIRECTORY_H_

#include <chrono>
#include <string>

#include "core/model_state_file.h"
#include "core/status.h"

namespace fedsilo::tracking {

class RunDirectory {
 public:
  // Creates <workdir>/runs/<run_id> with a fresh id "<job>-<UTC yyyymmdd-hhmmss>-<4 hex>".
  // Internal error naming the folder if it cannot be created.
  static StatusOr<RunDirectory> Create(const std::string& workdir, const std::string& job_name,
                                       std::chrono::system_clock::time_point now);

  // An existing run's folder (to resume it). NotFound naming the folder.
  static StatusOr<RunDirectory> Open(const std::string& workdir, const std::string& run_id);

  const std::string& run_id() const { return run_id_; }
  const std::string& path() const { return path_; }
  std::string job_path() const { return path_ + "/job.yaml"; }
  std::string metrics_path() const { return path_ + "/metrics.jsonl"; }
  std::string final_model_path() const { return path_ + "/final_model.fsm"; }
  // model.torchscript jobs: the final model as a TorchScript file.
  std::string final_torchscript_path() const { return path_ + "/final_model.pt"; }
  std::string summary_path() const { return path_ + "/summary.json"; }
  std::string CheckpointPath(int round) const;
  // The strategy's state after `round` (server optimizers' moments), beside
  // the checkpoint.
  std::string StrategyStatePath(int round) const;

  Status WriteCheckpoint(int round, const ModelState& state, const ModelMetadata& metadata) const;

 private:
  RunDirectory(std::string run_id, std::string path)
      : run_id_(std::move(run_id)), path_(std::move(path)) {}

  std::string run_id_;
  std::string path_;
};

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_RUN_DIRECTORY_H_
