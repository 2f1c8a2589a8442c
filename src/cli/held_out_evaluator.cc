#include "cli/held_out_evaluator.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "ml/dataset_catalog.h"
#include "ml/tabular.h"

namespace fedsilo::cli {

StatusOr<std::map<std::string, double>> HeldOutEvaluator::Evaluate(const ModelState& global) {
  FEDSILO_RETURN_IF_ERROR(model_->SetState(global));
  std::optional<BusyClock::Scope> scope;
  if (busy_ != nullptr) scope.emplace(busy_);
  FEDSILO_ASSIGN_OR_RETURN(ml::ClassificationMetrics m, model_->Evaluate(test_));
  return m.ToMap();
}

StatusOr<orchestrator::PreparedJob> BuiltinJobPreparer::Prepare(const JobConfig& job) {
  orchestrator::PreparedJob prepared;
  if (job.model.kind == ModelKind::kTorchScript) {
    prepared.save_torchscript = [module = job.model.torchscript, sandbox = sandbox_](
                                    const ModelState& state, const std::string& path) {
      // The run's own file: sealed at rest when a key ring is configured.
      FEDSILO_ASSIGN_OR_RETURN(std::string bytes,
                               ml::Model::TorchScriptWithState(module, state, &sandbox));
      return WriteProtectedFile(path, bytes);
    };
  }
  if (!IsBuiltinDataset(job.data.dataset)) {
    // The silos' own data: the input the statistics describe, and no
    // evaluator here (the silos score the global model).
    const FeatureStatistics& st = job.preprocess.statistics;
    if (st.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data.dataset '", job.data.dataset, "': no federated statistics to size the model"));
    }
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<ml::Model> model,
                             ml::Model::Create(ml::TabularModelSpec(job), job.seed, &sandbox_));
    prepared.initial = model->GetState();
    prepared.description = model->Describe();
    return prepared;
  }
  StatusOr<ml::DatasetSplits> data =
      loaded_.has_value()
          ? *loaded_
          : ml::LoadBuiltinDataset(job.data.dataset, data_dir_, job.data.test_fraction, job.seed);
  if (!data.ok()) {
    return Annotate(data.status(),
                    absl::StrCat("data.dataset '", job.data.dataset,
                                 "': the orchestrator evaluates the global model on its held-out "
                                 "split, from its --data-dir"));
  }
  const ml::ModelSpec spec{job.model, data->train->example_shape, data->train->num_classes};
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<ml::Model> model,
                           ml::Model::Create(spec, job.seed, &sandbox_));
  prepared.initial = model->GetState();
  prepared.description = model->Describe();
  prepared.evaluator =
      std::make_unique<HeldOutEvaluator>(std::move(model), ml::DataView::All(data->test), busy_);
  return prepared;
}

}  // namespace fedsilo::cli
