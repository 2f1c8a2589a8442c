// The global model's evaluation on the held-out test split of a built-in data
// set, in simulation and in the orchestrator daemon (which prepares each job's
// initial model and evaluator with BuiltinJobPreparer).
#ifndef FEDSILO_CLI_HELD_OUT_EVALUATOR_H_
#define FEDSILO_CLI_HELD_OUT_EVALUATOR_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/busy_clock.h"
#include "ml/dataset.h"
#include "ml/model.h"
#include "ml/sandbox.h"
#include "orchestrator/job_run.h"
#include "orchestrator/orchestrator.h"

namespace fedsilo::cli {

// Scores global models on a test set with one local model. `busy` may be null.
class HeldOutEvaluator : public orchestrator::ModelEvaluator {
 public:
  HeldOutEvaluator(std::unique_ptr<ml::Model> model, ml::DataView test, BusyClock* busy)
      : model_(std::move(model)), test_(std::move(test)), busy_(busy) {}

  StatusOr<std::map<std::string, double>> Evaluate(const ModelState& global) override;

 private:
  std::unique_ptr<ml::Model> model_;
  ml::DataView test_;
  BusyClock* busy_;
};

// For the orchestrator daemon: the job's model, initialised from its seed as
// in simulation, and its evaluation on the built-in data set's held-out split,
// read from the orchestrator's own data folder. (That split is public
// benchmark data; silo data never reaches the orchestrator.) A job on the
// silos' own files gets the model its federated statistics describe, and no
// evaluator: the silos score the global model on their test rows.
class BuiltinJobPreparer : public orchestrator::JobPreparer {
 public:
  // A job's TorchScript module runs only in `sandbox`, never in this process.
  BuiltinJobPreparer(std::string data_dir, ml::Sandbox sandbox)
      : data_dir_(std::move(data_dir)), sandbox_(std::move(sandbox)) {}
  // A simulation has the data set loaded already: its held-out split is
  // used, and the evaluation's time is counted in `busy` (may be null).
  BuiltinJobPreparer(ml::DatasetSplits loaded, ml::Sandbox sandbox, BusyClock* busy)
      : sandbox_(std::move(sandbox)), loaded_(std::move(loaded)), busy_(busy) {}
  StatusOr<orchestrator::PreparedJob> Prepare(const JobConfig& job) override;

 private:
  std::string data_dir_;
  ml::Sandbox sandbox_;
  std::optional<ml::DatasetSplits> loaded_;
  BusyClock* busy_ = nullptr;
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_HELD_OUT_EVALUATOR_H_
