#include "cli/predict_command.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/command.h"
#include "cli/export_command.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "ml/model.h"
#include "ml/sandbox.h"
#include "ml/tabular.h"
#include "orchestrator/vertical_run.h"
#include "silo/vertical_party.h"
#include "tracking/run_directory.h"

namespace fedsilo::cli {
namespace {

// The job's model and where it came from, for messages.
struct Loaded {
  JobConfig job;
  ModelState state;
  std::string module;  // model.torchscript jobs
  std::string source;
};

// `fedsilo predict RUN --data PARTY=FILE ...` of a vertical run: every
// party in this process with its part of the run, as a job that predicts
// with it (vertical.predict_with) runs at the silos.
Status PredictVertical(const PredictOptions& options, const RunJob& found) {
  const std::string& run_id = found.run.run_id;
  JobConfig job = found.job;
  job.vertical.predict_with = run_id;
  job.training.rounds = 1;
  const std::vector<std::string>& parties = job.federation.silos;
  std::map<std::string, std::string> files;
  for (const std::string& d : options.data) {
    const size_t eq = d.find('=');
    const std::string party = eq == std::string::npos ? "" : d.substr(0, eq);
    if (std::find(parties.begin(), parties.end(), party) == parties.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--data ", d, ": run ", run_id,
                       " is a vertical job; give each party's rows as PARTY=FILE (",
                       "its parties: ", absl::StrJoin(parties, ", "), ")"));
    }
    if (!files.emplace(party, d.substr(eq + 1)).second) {
      return absl::InvalidArgumentError(absl::StrCat("--data: party '", party, "' given twice"));
    }
  }
  std::vector<std::string> missing;
  for (const std::string& p : parties) {
    if (files.count(p) == 0) missing.push_back(p);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--data: run ", run_id, "'s model needs every party's part and rows; missing: ",
        absl::StrJoin(missing, ", "), " (give --data PARTY=FILE for each)"));
  }
  FEDSILO_ASSIGN_OR_RETURN(tracking::RunDirectory run_dir,
                           tracking::RunDirectory::Open(options.workdir, run_id));
  std::vector<std::unique_ptr<silo::VerticalPartyAgent>> agents;
  std::vector<transport::VerticalParty*> reach;
  silo::VerticalPartyAgent* owner = nullptr;
  for (const std::string& name : parties) {
    silo::VerticalPartyOptions party;
    party.sandbox = ml::Sandbox::ThisProgram();  // for a TorchScript bottom model
    FEDSILO_ASSIGN_OR_RETURN(
        silo::KeptPart kept,
        silo::ReadKeptPart(absl::StrCat(run_dir.path(), "/parties/", name), name, run_id));
    silo::DatasetEntry entry;
    entry.csv = files[name];
    entry.schema.id = kept.id_column;
    entry.schema.label = kept.sums.label;
    entry.schema.missing = ml::MissingValues::kImpute;  // as `predict` fills them
    party.kept = std::make_shared<const silo::KeptPart>(std::move(kept));
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<silo::VerticalPartyAgent> agent,
                             silo::VerticalPartyAgent::Create(name, job, entry, party));
    if (agent->label_owner()) owner = agent.get();
    reach.push_back(agent.get());
    agents.push_back(std::move(agent));
  }
  orchestrator::VerticalRunOptions run_options;
  run_options.domain = absl::StrCat("fedsilo/vertical/predict/", run_id);
  orchestrator::VerticalRun scoring(job, reach, run_options);
  FEDSILO_ASSIGN_OR_RETURN(orchestrator::VerticalAlignment alignment, scoring.Align());
  FEDSILO_RETURN_IF_ERROR(scoring.Train(alignment).status());
  const std::string csv = owner->PredictionsCsv();
  if (options.out.empty()) {
    std::fwrite(csv.data(), 1, csv.size(), stdout);
  } else {
    FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(options.out, csv));
  }
  nlohmann::json summary = {{"model", absl::StrCat("run ", run_id)},
                            {"rows", alignment.intersection},
                            {"label_owner_rows", owner->rows()}};
  if (!options.out.empty()) summary["out"] = options.out;
  // The rows are the user's own here: the label owner's metrics, which a
  // run that predicts keeps to itself, are shown.
  for (const auto& [name, value] : owner->PredictionMetrics()) summary[name] = value;
  if (options.json) {
    std::printf("%s\n", summary.dump().c_str());
  } else if (!options.out.empty()) {
    std::string line = absl::StrFormat(
        "%s: %lld of %s's %lld rows scored with run %s (the others are not at "
        "every party)",
        options.out, static_cast<long long>(alignment.intersection), owner->name(),
        static_cast<long long>(owner->rows()), run_id);
    if (alignment.intersection == owner->rows()) {
      line = absl::StrFormat("%s: %lld rows scored with run %s", options.out,
                             static_cast<long long>(alignment.intersection), run_id);
    }
    for (const char* name : {"accuracy", "precision", "recall", "auc"}) {
      if (summary.contains(name)) {
        absl::StrAppendFormat(&line, "; %s %.4f", name, summary[name].get<double>());
      }
    }
    std::printf("%s\n", line.c_str());
  }
  return absl::OkStatus();
}

StatusOr<Loaded> Load(const PredictOptions& options) {
  std::error_code ec;
  Loaded out;
  if (std::filesystem::is_regular_file(options.model, ec)) {
    FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ReadModelStateFile(options.model));
    auto it = file.metadata.find("job_yaml");
    if (it == file.metadata.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.model,
          ": carries no job (its preprocessing); give the run id, or a file written by "
          "`fedsilo export RUN --format fsm`"));
    }
    FEDSILO_ASSIGN_OR_RETURN(out.job, ParseJobConfig(it->second, options.model + " job"));
    out.state = std::move(file.state);
    out.module = out.job.model.torchscript;
    out.source = options.model;
    return out;
  }
  FEDSILO_ASSIGN_OR_RETURN(RunModel run,
                           LoadRunModel(options.workdir, options.model, options.round));
  out.job = std::move(run.job);
  out.state = std::move(run.model.state);
  out.module = run.module;
  out.source = absl::StrCat("run ", run.run.run_id);
  return out;
}

}  // namespace

Status PredictCommand(const PredictOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(options.model, ec)) {
    FEDSILO_ASSIGN_OR_RETURN(RunJob found, LoadRunJob(options.workdir, options.model));
    if (found.job.kind == JobKind::kVertical) {
      if (options.round > 0) {
        return absl::InvalidArgumentError(
            "--round: a vertical run keeps its parts after its last round only");
      }
      return PredictVertical(options, found);
    }
  }
  if (options.data.size() != 1) {
    return absl::InvalidArgumentError(
        "--data: one CSV file (PARTY=FILE per party is for vertical runs)");
  }
  const std::string& data_file = options.data[0];
  FEDSILO_ASSIGN_OR_RETURN(Loaded loaded, Load(options));
  const JobConfig& job = loaded.job;
  const FeatureStatistics& st = job.preprocess.statistics;
  if (st.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        loaded.source, " trained on data set '", job.data.dataset,
        "', not on tabular files: predict scores CSV rows with models of csv datasets"));
  }
  if (!st.shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        loaded.source, " trained on images (IDX files); predict scores the rows of CSV files"));
  }
  const ml::TabularSchema schema = ml::SchemaOfJob(job.preprocess);
  FEDSILO_ASSIGN_OR_RETURN(ml::TabularData table,
                           ml::ReadTabularCsv(data_file, schema, job.preprocess,
                                              /*need_label=*/false));
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<ml::Dataset> data,
                           ml::PrepareTabular(table, job.preprocess, data_file));
  JobConfig local = job;
  if (job.model.kind == ModelKind::kTorchScript) local.model.torchscript = loaded.module;
  const ml::Sandbox sandbox = ml::Sandbox::ThisProgram();  // a TorchScript module is code
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<ml::Model> model,
                           ml::Model::Create(ml::TabularModelSpec(local), job.seed, &sandbox));
  FEDSILO_RETURN_IF_ERROR(
      Annotate(model->SetState(loaded.state), absl::StrCat(loaded.source, ": model")));
  const ml::DataView all = ml::DataView::All(data);
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> logp, model->PredictLogProbabilities(all));

  const bool labelled = !table.labels.empty();
  const size_t k = static_cast<size_t>(data->num_classes);
  std::string csv = "row,predicted";
  for (size_t c = 0; c < k; ++c) absl::StrAppend(&csv, ",p_", c);
  if (labelled) absl::StrAppend(&csv, ",", st.label);
  csv += "\n";
  for (int64_t i = 0; i < all.size(); ++i) {
    const float* row = logp.data() + static_cast<size_t>(i) * k;
    absl::StrAppend(&csv, i + 1, ",", std::max_element(row, row + k) - row);
    for (size_t c = 0; c < k; ++c) absl::StrAppendFormat(&csv, ",%.6f", std::exp(row[c]));
    if (labelled) absl::StrAppend(&csv, ",", table.labels[static_cast<size_t>(i)]);
    csv += "\n";
  }
  if (options.out.empty()) {
    std::fwrite(csv.data(), 1, csv.size(), stdout);
  } else {
    FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(options.out, csv));
  }

  nlohmann::json summary = {{"model", loaded.source}, {"rows", all.size()}};
  if (!options.out.empty()) summary["out"] = options.out;
  if (labelled) {
    const ml::ClassificationMetrics m = ml::MetricsOfPredictions(logp, data->num_classes, all);
    for (const auto& [name, value] : m.ToMap()) summary[name] = value;
  }
  if (options.json) {
    std::printf("%s\n", summary.dump().c_str());
  } else if (!options.out.empty()) {
    std::string line = absl::StrFormat("%s: %lld rows scored with %s", options.out,
                                       static_cast<long long>(all.size()), loaded.source);
    for (const char* name : {"accuracy", "precision", "recall", "auc"}) {
      if (summary.contains(name)) {
        absl::StrAppendFormat(&line, "; %s %.4f", name, summary[name].get<double>());
      }
    }
    std::printf("%s\n", line.c_str());
  }
  return absl::OkStatus();
}

void RegisterPredictCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<PredictOptions>();
  CLI::App* predict = app.add_subcommand(
      "predict",
      "Score the rows of a CSV file with a run's model, prepared as the silos prepared theirs");
  predict
      ->add_option("model", options->model,
                   "Run id (or a unique prefix, or job id), or an .fsm file from "
                   "`fedsilo export --format fsm`")
      ->required();
  predict
      ->add_option("--data", options->data,
                   "CSV file with a header; for a vertical run, PARTY=FILE for each party "
                   "(repeat --data)")
      ->required();
  predict->add_option("--out,-o", options->out, "Predictions CSV (default: standard output)");
  predict->add_option("--workdir", options->workdir,
                      "Work folder (or orchestrator state folder) holding the run");
  predict->add_option("--round", options->round, "A checkpointed round instead of the final model")
      ->check(CLI::PositiveNumber);
  predict->add_flag("--json", options->json, "Print a JSON summary as the last line");
  commands.AddStorageKeysOption(predict);
  commands.Add(predict, kStateFiles, [options] { return PredictCommand(*options); });
}

}  // namespace fedsilo::cli
