#include "cli/export_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/command.h"
#include "cli/simulation.h"
#include "core/file_util.h"
#include "core/job_config.h"
#include "core/model_state_file.h"
#include "ml/model.h"
#include "ml/sandbox.h"
#include "orchestrator/job_store.h"
#include "orchestrator/run_views.h"
#include "tracking/run_directory.h"

namespace fedsilo::cli {
namespace {

namespace fs = std::filesystem;

// The rounds whose checkpoints the run folder kept, for the error message.
std::string KeptRounds(const tracking::RunDirectory& run_dir, int rounds_total) {
  std::vector<int> kept;
  std::error_code ec;
  for (int r = 1; r <= rounds_total; ++r) {
    if (fs::exists(run_dir.CheckpointPath(r), ec)) kept.push_back(r);
  }
  return kept.empty() ? "none" : absl::StrJoin(kept, ", ");
}

}  // namespace

StatusOr<RunJob> LoadRunJob(const std::string& workdir, const std::string& name) {
  const std::string store_path = RunStorePath(workdir);
  std::error_code ec;
  if (!fs::exists(store_path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(store_path, ": no run store here"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store,
                           orchestrator::JobStore::Open(store_path));
  RunJob out;
  FEDSILO_ASSIGN_OR_RETURN(out.run, orchestrator::FindRun(*store, name));
  FEDSILO_ASSIGN_OR_RETURN(out.job,
                           ParseJobConfig(out.run.job_yaml, absl::StrCat(out.run.run_id, " job")));
  return out;
}

StatusOr<RunModel> LoadRunModel(const std::string& workdir, const std::string& name, int round) {
  RunModel out;
  FEDSILO_ASSIGN_OR_RETURN(RunJob found, LoadRunJob(workdir, name));
  out.run = std::move(found.run);
  out.job = std::move(found.job);
  const orchestrator::JobRecord& run = out.run;
  if (out.job.kind == JobKind::kVertical) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", run.run_id,
        " is a vertical job: its model is in parts, each party's with the party (a simulated "
        "run's in its folder's parties/); score rows with `fedsilo predict ",
        run.run_id, " --data PARTY=FILE ...` (see docs/vertical.md, Predicting)"));
  }
  std::error_code ec;
  FEDSILO_ASSIGN_OR_RETURN(tracking::RunDirectory run_dir,
                           tracking::RunDirectory::Open(workdir, run.run_id));
  const std::string model_path =
      round > 0 ? run_dir.CheckpointPath(round) : run_dir.final_model_path();
  if (!fs::exists(model_path, ec)) {
    if (round > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("run ", run.run_id, " kept no checkpoint of round ", round,
                       " (kept: ", KeptRounds(run_dir, run.rounds_total), "; checkpoint.every is ",
                       out.job.checkpoint.every, ")"));
    }
    return absl::InvalidArgumentError(absl::StrCat("run ", run.run_id, " has no final model (it ",
                                                   orchestrator::JobStateName(run.state), ")"));
  }
  FEDSILO_ASSIGN_OR_RETURN(out.model, ReadModelStateFile(model_path));
  if (out.job.model.kind == ModelKind::kTorchScript) {
    // A submitted job names its module by digest; the orchestrator kept it.
    out.module = out.job.model.torchscript;
    FEDSILO_ASSIGN_OR_RETURN(const std::string digest, ShippedModuleDigest(out.module));
    if (!digest.empty()) out.module = ShippedModulePath(workdir + "/models", digest);
  }
  return out;
}

Status ExportCommand(const ExportOptions& options) {
  if (options.format != "" && options.format != "fsm" && options.format != "torchscript") {
    return absl::InvalidArgumentError(
        absl::StrCat("--format ", options.format, ": one of fsm, torchscript"));
  }
  FEDSILO_ASSIGN_OR_RETURN(RunModel loaded,
                           LoadRunModel(options.workdir, options.run, options.round));
  const orchestrator::JobRecord& run = loaded.run;
  const JobConfig& job = loaded.job;
  ModelFile& model = loaded.model;
  std::error_code ec;
  const bool scripted = job.model.kind == ModelKind::kTorchScript;
  const std::string format =
      options.format.empty() ? (scripted ? "torchscript" : "fsm") : options.format;
  if (format == "fsm") {
    // The resolved job travels with the model: `fedsilo predict` prepares
    // new data with its preprocessing.
    model.metadata["job_yaml"] = run.job_yaml;
    // In the clear, like a download: taking the model out is what export is
    // for. The run's own files stay sealed.
    FEDSILO_RETURN_IF_ERROR(
        WriteFileAtomically(options.out, SerializeModelState(model.state, model.metadata)));
  } else {
    if (!scripted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--format torchscript: run ", run.run_id, "'s model is the built-in ",
          ModelKindName(job.model.kind), ", which has no TorchScript form; use --format fsm"));
    }
    const std::string& module = loaded.module;
    if (!fs::exists(module, ec)) {
      return absl::InvalidArgumentError(absl::StrCat("run ", run.run_id, "'s TorchScript module ",
                                                     module, " is gone; --format fsm works"));
    }
    const ml::Sandbox sandbox = ml::Sandbox::ThisProgram();  // the module is code
    FEDSILO_RETURN_IF_ERROR(
        ml::Model::ExportTorchScript(module, model.state, options.out, &sandbox));
  }
  const std::string round =
      model.metadata.count("round") ? model.metadata.at("round") : std::to_string(options.round);
  if (options.json) {
    std::printf(
        "%s\n",
        nlohmann::json(
            {{"run_id", run.run_id}, {"round", round}, {"format", format}, {"path", options.out}})
            .dump()
            .c_str());
  } else {
    std::printf("wrote %s (%s, run %s after round %s)\n", options.out.c_str(), format.c_str(),
                run.run_id.c_str(), round.c_str());
  }
  return absl::OkStatus();
}

void RegisterExportCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<ExportOptions>();
  CLI::App* export_cmd = app.add_subcommand(
      "export", "Write a run's final model (or a kept checkpoint) as .fsm or TorchScript");
  export_cmd->add_option("run", options->run, "Run id (or a unique prefix, or job id)")->required();
  export_cmd->add_option("--workdir", options->workdir,
                         "Work folder (or orchestrator state folder) holding the run "
                         "(default: current folder)");
  export_cmd
      ->add_option("--format", options->format,
                   "fsm or torchscript (default: torchscript for model.torchscript jobs)")
      ->check(CLI::IsMember({"fsm", "torchscript"}));
  export_cmd
      ->add_option("--round", options->round, "A checkpointed round instead of the final model")
      ->check(CLI::PositiveNumber);
  export_cmd->add_option("--out,-o", options->out, "Output file")->required();
  export_cmd->add_flag("--json", options->json, "Print JSON");
  commands.AddStorageKeysOption(export_cmd);
  commands.Add(export_cmd, kStateFiles, [options] { return ExportCommand(*options); });
}

}  // namespace fedsilo::cli
