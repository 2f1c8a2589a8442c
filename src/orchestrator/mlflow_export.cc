#include "orchestrator/mlflow_export.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "core/file_seal.h"
#include "core/file_util.h"

namespace fedsilo::orchestrator {
namespace {

constexpr char kRunIdFile[] = "mlflow_run_id";

}  // namespace

std::unique_ptr<MlflowExport> MlflowExport::Start(const JobConfig& job, const JobRecord& record,
                                                  const tracking::RunDirectory& run_dir) {
  const MlflowConfig& config = job.tracking.mlflow;
  if (config.uri.empty()) return nullptr;
  tracking::MlflowExportOptions options;
  options.uri = config.uri;
  options.experiment = config.experiment.empty() ? job.experiment : config.experiment;
  options.run_name = run_dir.run_id();
  options.tags = {{"fedsilo.run_id", run_dir.run_id()},
                  {"fedsilo.job_id", record.id},
                  {"fedsilo.job", job.name},
                  {"fedsilo.experiment", job.experiment},
                  {"mlflow.user", record.owner},
                  {"mlflow.source.name", "fedsilo"}};
  for (auto& [key, value] : FlattenJobConfig(job)) options.params.emplace_back(key, value);
  const std::string id_path = run_dir.path() + "/" + kRunIdFile;
  std::error_code ec;
  if (std::filesystem::exists(id_path, ec)) {
    StatusOr<std::string> id = ReadFile(id_path);
    if (id.ok()) options.resume_run_id = std::string(absl::StripAsciiWhitespace(*id));
  }
  options.on_run_created = [id_path](const std::string& mlflow_run_id) {
    Status saved = WriteFileAtomically(id_path, mlflow_run_id + "\n");
    if (!saved.ok()) spdlog::warn("MLflow: {}", std::string(saved.message()));
  };
  StatusOr<std::unique_ptr<tracking::MlflowExporter>> exporter =
      tracking::MlflowExporter::Start(std::move(options));
  if (!exporter.ok()) {
    spdlog::error("MLflow export off for this run: {}", std::string(exporter.status().message()));
    return nullptr;
  }
  return std::unique_ptr<MlflowExport>(
      new MlflowExport(std::move(exporter).value(), config, run_dir));
}

MlflowExport::MlflowExport(std::unique_ptr<tracking::MlflowExporter> exporter,
                           MlflowConfig config, tracking::RunDirectory run_dir)
    : exporter_(std::move(exporter)), config_(std::move(config)), run_dir_(std::move(run_dir)) {}

tracking::MlflowExportReport MlflowExport::Finish(JobState state,
                                                  std::chrono::milliseconds max_wait) {
  std::string status;
  switch (state) {
    case JobState::kDone:
      status = "FINISHED";
      break;
    case JobState::kFailed:
      status = "FAILED";
      break;
    case JobState::kAborted:
      status = "KILLED";
      break;
    case JobState::kQueued:
    case JobState::kRunning:
      break;  // to be resumed: the MLflow run stays open
  }
  if (state == JobState::kDone && config_.log_model) {
    // Decrypted when sealed at rest: the job asked for the model to go to MLflow.
    // {file in the run folder, artifact path}
    std::vector<std::pair<std::string, std::string>> artifacts = {
        {run_dir_.final_model_path(), "model/final_model.fsm"},
        {run_dir_.job_path(), "job.yaml"}};
    std::error_code ec;
    if (std::filesystem::exists(run_dir_.final_torchscript_path(), ec)) {  // model.torchscript
      artifacts.emplace_back(run_dir_.final_torchscript_path(), "model/final_model.pt");
    }
    for (const auto& [path, artifact] : artifacts) {
      StatusOr<std::string> bytes = ReadProtectedFile(path);
      if (bytes.ok()) {
        exporter_->AddArtifact(artifact, std::move(bytes).value());
      } else {
        spdlog::warn("MLflow: {} not uploaded: {}", path, std::string(bytes.status().message()));
      }
    }
  }
  return exporter_->Finish(
      status, std::min<std::chrono::milliseconds>(std::chrono::seconds(config_.wait), max_wait));
}

}  // namespace fedsilo::orchestrator
