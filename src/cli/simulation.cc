#include "cli/simulation.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/format.h"
#include "cli/held_out_evaluator.h"
#include "cli/simulated_silos.h"
#include "cli/vertical_simulation.h"
#include "core/busy_clock.h"
#include "core/file_util.h"
#include "ml/dataset_catalog.h"
#include "ml/partitioner.h"
#include "ml/sandbox.h"
#include "orchestrator/job_run.h"
#include "orchestrator/job_store.h"
#include "secure/secagg.h"

namespace fedsilo::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Prints one line per round: progress, global metrics, timing and an estimate
// of the time left.
class ProgressPrinter : public orchestrator::RoundObserver {
 public:
  Status OnRoundEnd(const orchestrator::RoundSummary& s, const ModelState&, int total) override {
    if (first_round_ == 0) first_round_ = s.round;  // a resumed run starts later
    const double eta = s.elapsed_seconds / (s.round - first_round_ + 1) * (total - s.round);
    if (s.global_metrics.empty()) {  // a vertical job that predicts: its metrics stay
      std::printf("round %d/%d  silos %d/%d  %s\n", s.round, total, s.silos_succeeded,
                  s.silos_sampled, FormatDuration(s.round_seconds).c_str());
      std::fflush(stdout);
      return absl::OkStatus();
    }
    std::string line = absl::StrFormat(
        "round %*d/%d  loss %.4f  accuracy %.4f  silos %d/%d  %s  elapsed %s  eta %s",
        static_cast<int>(std::to_string(total).size()), s.round, total,
        s.global_metrics.count("loss") ? s.global_metrics.at("loss") : 0.0,
        s.global_metrics.count("accuracy") ? s.global_metrics.at("accuracy") : 0.0,
        s.silos_succeeded, s.silos_sampled, FormatDuration(s.round_seconds),
        FormatDuration(s.elapsed_seconds), FormatDuration(eta));
    for (const char* metric : {"precision", "recall", "auc"}) {
      if (s.global_metrics.count(metric)) {
        absl::StrAppendFormat(&line, "  %s %.4f", metric, s.global_metrics.at(metric));
      }
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

 private:
  int first_round_ = 0;
};

// Who ran it, for the run store: $USER, or "local".
std::string LocalUser() {
  const char* user = std::getenv("USER");
  return user != nullptr && *user != '\0' ? user : "local";
}

// The --attack / --attackers pair, checked before anything is recorded.
StatusOr<std::optional<Attack>> CheckAttack(const JobConfig& job,
                                            const SimulationOptions& options) {
  if (options.attackers <= 0 && options.attack.empty()) return std::optional<Attack>();
  if (options.attackers <= 0 || options.attack.empty()) {
    return absl::InvalidArgumentError("--attack and --attackers go together");
  }
  if (options.processes) {
    return absl::InvalidArgumentError("--attack simulates attackers in-process; drop --processes");
  }
  const int num_silos = static_cast<int>(job.federation.silos.size());
  if (options.attackers > num_silos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--attackers: ", options.attackers, " is more than the job's ", num_silos, " silos"));
  }
  FEDSILO_ASSIGN_OR_RETURN(Attack attack, ParseAttack(options.attack));
  return std::optional<Attack>(attack);
}

// What the run prints before its first round.
void PrintHeader(const JobConfig& job, const SimulationOptions& options, int threads,
                 const orchestrator::JobRun& run, const orchestrator::PreparedJob& prepared,
                 const ml::DatasetSplits& data);

// The run itself, its silos and data made as the options say.
StatusOr<SimulationSummary> RunWithSilos(const SimulationOptions& options,
                                         const std::optional<Attack>& attack,
                                         orchestrator::JobRun& run);

}  // namespace

std::string SimulationSummary::ToJson() const {
  nlohmann::json final_json = nlohmann::json::object();
  for (const auto& [k, v] : final_metrics) final_json[k] = v;
  nlohmann::json j = {{"run_id", run_id},
                      {"run_dir", run_dir},
                      {"final_model", final_model},
                      {"rounds_completed", rounds_completed},
                      {"final", final_json},
                      {"wall_seconds", wall_seconds},
                      {"overhead_fraction", overhead_fraction}};
  if (overhead_fraction < 0) j["overhead_fraction"] = nullptr;
  if (psi_parties > 0) j["psi"] = {{"intersection", psi_intersection}, {"parties", psi_parties}};
  if (!predictions.empty()) j["predictions"] = predictions;
  return j.dump();
}

std::string RunStorePath(const std::string& workdir) { return workdir + "/fedsilo.db"; }

namespace {

StatusOr<std::unique_ptr<orchestrator::JobStore>> OpenStore(const SimulationOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.workdir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workdir ", options.workdir, ": cannot create it: ", ec.message()));
  }
  return orchestrator::JobStore::Open(RunStorePath(options.workdir));
}

// The data catalog a job on the silos' own files needs in simulation.
Status CheckSimulatable(const JobConfig& job) {
  if (IsBuiltinDataset(job.data.dataset) || !job.data.catalog.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "data.dataset: '", job.data.dataset, "' is not a built-in data set (",
      absl::StrJoin(kKnownDatasets, ", "),
      "); to simulate silos with their own files, give data.catalog: a dataset catalog "
      "(datasets.yaml) whose csv paths may hold {silo}"));
}

// Runs `run` (anew, or on from its last committed round) and records how it
// ended.
StatusOr<SimulationSummary> RunRecorded(const SimulationOptions& options,
                                        const std::optional<Attack>& attack,
                                        orchestrator::JobStore* store, orchestrator::JobRun& run) {
  const std::string& id = run.record().id;
  StatusOr<SimulationSummary> summary = [&]() -> StatusOr<SimulationSummary> {
    FEDSILO_RETURN_IF_ERROR(store->SetState(id, orchestrator::JobState::kRunning));
    return RunWithSilos(options, attack, run);
  }();
  const orchestrator::JobState state =
      summary.ok() ? orchestrator::JobState::kDone : orchestrator::JobState::kFailed;
  const std::optional<tracking::MlflowExportReport> report = run.FinishTracking(state);
  if (!options.quiet && report.has_value() && !report->run_id.empty()) {
    std::printf("  mlflow  run %s at %s: %lld metrics sent%s\n", report->run_id.c_str(),
                run.job().tracking.mlflow.uri.c_str(), static_cast<long long>(report->metrics_sent),
                report->complete() ? "" : " (incomplete: see the warnings above)");
  }
  Status recorded =
      store->SetState(id, state, summary.ok() ? "" : std::string(summary.status().message()));
  if (summary.ok() && !recorded.ok()) return recorded;
  return summary;
}

}  // namespace

StatusOr<SimulationSummary> RunSimulation(const JobConfig& job, const SimulationOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(const std::optional<Attack> attack, CheckAttack(job, options));
  FEDSILO_RETURN_IF_ERROR(CheckSimulatable(job));
  FEDSILO_RETURN_IF_ERROR(CheckVerticalSimulation(job, options));
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store, OpenStore(options));
  // Recorded first, so that a run that fails on its data is on record too.
  orchestrator::JobRecord record;
  record.name = job.name;
  record.owner = LocalUser();
  record.job_yaml = JobConfigToYaml(job);
  record.rounds_total = job.training.rounds;
  record.experiment = job.experiment;
  FEDSILO_ASSIGN_OR_RETURN(record, store->CreateJob(std::move(record)));
  StatusOr<std::unique_ptr<orchestrator::JobRun>> run = [&] {
    Status added = store->AddSilos(record.id, job.federation.silos);
    return added.ok() ? orchestrator::JobRun::Begin(options.workdir, store.get(), record, job)
                      : StatusOr<std::unique_ptr<orchestrator::JobRun>>(added);
  }();
  if (!run.ok()) {
    (void)store->SetState(record.id, orchestrator::JobState::kFailed,
                          std::string(run.status().message()));
    return run.status();
  }
  return RunRecorded(options, attack, store.get(), **run);
}

StatusOr<SimulationSummary> ResumeSimulation(const std::string& run,
                                             const SimulationOptions& options) {
  std::error_code ec;
  if (std::filesystem::exists(options.workdir + "/lock", ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--resume: ", options.workdir,
        " is an orchestrator's state folder; its jobs resume when the orchestrator starts"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store, OpenStore(options));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<orchestrator::JobRecord> jobs, store->ListJobs());
  const orchestrator::JobRecord* found = nullptr;
  for (const orchestrator::JobRecord& j : jobs) {
    if (!run.empty() && (j.run_id == run || j.id == run)) found = &j;
  }
  if (found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--resume: no run or job '", run, "' in ", RunStorePath(options.workdir)));
  }
  if (found->run_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--resume: run '", run, "' never started: run its job again"));
  }
  FEDSILO_ASSIGN_OR_RETURN(JobConfig job,
                           ParseJobConfig(found->job_yaml, absl::StrCat("run ", found->run_id)));
  if (TraitsOf(job.strategy).control_variates) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--resume: run '", run, "' uses strategy ", job.strategy.name,
        ", whose simulated silos kept their control variates in the process that stopped; run "
        "its job again"));
  }
  FEDSILO_RETURN_IF_ERROR(CheckSimulatable(job));
  FEDSILO_RETURN_IF_ERROR(CheckVerticalSimulation(job, options));
  FEDSILO_ASSIGN_OR_RETURN(const std::optional<Attack> attack, CheckAttack(job, options));
  // The run's folder is ours from here on, and its record as it now stands.
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobRun> begun,
                           orchestrator::JobRun::Begin(options.workdir, store.get(), *found, job));
  const orchestrator::JobRecord& record = begun->record();
  if (record.state == orchestrator::JobState::kDone ||
      record.state == orchestrator::JobState::kAborted) {
    return absl::InvalidArgumentError(
        absl::StrCat("--resume: run '", run, "' ",
                     record.state == orchestrator::JobState::kAborted
                         ? std::string("was aborted; run its job again")
                         : absl::StrCat("is done (", record.rounds_completed, " of ",
                                        record.rounds_total, " rounds); nothing to resume")));
  }
  if (!options.quiet) {
    std::printf("fedsilo: resuming run %s after round %d of %d\n", record.run_id.c_str(),
                record.rounds_completed, record.rounds_total);
  }
  return RunRecorded(options, attack, store.get(), *begun);
}

namespace {

void PrintHeader(const JobConfig& job, const SimulationOptions& options, int threads,
                 const orchestrator::JobRun& run, const orchestrator::PreparedJob& prepared,
                 const ml::DatasetSplits& data) {
  const int num_silos = static_cast<int>(job.federation.silos.size());
  std::printf("fedsilo: run %s\n", run.run_dir().run_id().c_str());
  if (!IsBuiltinDataset(job.data.dataset)) {
    const FeatureStatistics& st = job.preprocess.statistics;
    std::string classes;
    for (size_t c = 0; c < st.class_counts.size(); ++c) {
      absl::StrAppendFormat(&classes, "%s%d: %lld", c == 0 ? "" : ", ", static_cast<int>(c),
                            static_cast<long long>(st.class_counts[c]));
    }
    const std::string input = st.shape.empty() ? absl::StrCat(st.features.size(), " features")
                                               : absl::StrCat("images ", ShapeToString(st.shape));
    std::printf(
        "  data    %s: %lld training %s in %d silos' own files (classes %s), %s, "
        "scaling %s\n",
        job.data.dataset.c_str(), static_cast<long long>(st.rows),
        st.shape.empty() ? "rows" : "examples", num_silos, classes.c_str(), input.c_str(),
        std::string(ScaleKindName(job.preprocess.scale)).c_str());
  } else {
    std::string scheme(PartitionSchemeName(job.data.partition));
    if (job.data.partition == PartitionScheme::kDirichlet) {
      absl::StrAppendFormat(&scheme, ", alpha %g", job.data.alpha);
    } else if (job.data.partition == PartitionScheme::kShards) {
      absl::StrAppendFormat(&scheme, ", %d shards each", job.data.shards_per_silo);
    }
    std::printf("  data    %s: %lld training examples over %d silos (%s), %lld held out\n",
                job.data.dataset.c_str(), static_cast<long long>(data.train->size()), num_silos,
                scheme.c_str(), static_cast<long long>(data.test->size()));
  }
  std::printf("  model   %s\n", prepared.description.c_str());
  std::printf("  rounds  %d, %s, %d silo(s) training at once\n", job.training.rounds,
              job.strategy.name.c_str(), threads);
  if (options.attackers > 0 && options.attackers <= num_silos) {
    std::vector<std::string> names(job.federation.silos.end() - options.attackers,
                                   job.federation.silos.end());
    std::printf("  attack  %s updates from %s\n", options.attack.c_str(),
                absl::StrJoin(names, ", ").c_str());
  }
  if (run.exports_to_mlflow()) {
    const MlflowConfig& ml = job.tracking.mlflow;
    std::printf("  mlflow  %s, experiment '%s'\n", ml.uri.c_str(),
                (ml.experiment.empty() ? job.experiment : ml.experiment).c_str());
  }
  const SecureAggregationConfig& sa = job.privacy.secure_aggregation;
  if (sa.enabled) {
    const int sampled = SilosPerRound(job.federation);
    std::printf(
        "  secure  aggregation: threshold %d of %d, %d-bit fixed point, values clipped to "
        "+-%g\n",
        secure::SecAggThreshold(sa.threshold, sampled, job.federation.min_silos), sampled, sa.bits,
        sa.clip_range);
  }
  std::fflush(stdout);
}

StatusOr<SimulationSummary> RunWithSilos(const SimulationOptions& options,
                                         const std::optional<Attack>& attack,
                                         orchestrator::JobRun& run) {
  const JobConfig& job = run.job();
  ProgressPrinter progress;
  if (job.kind == JobKind::kVertical) {
    return RunVerticalSimulation(options, run, options.quiet ? nullptr : &progress);
  }
  const Clock::time_point start = Clock::now();
  const std::string data_dir = options.data_dir.empty() ? ml::DefaultDataDir() : options.data_dir;
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  // Built-in data is partitioned here; a catalog's data stays with each
  // simulated silo, which reads its own file.
  const bool silo_data = !IsBuiltinDataset(job.data.dataset);
  ml::DatasetSplits data;
  std::vector<ml::SiloData> parts;
  if (!silo_data) {
    FEDSILO_ASSIGN_OR_RETURN(
        data, ml::LoadBuiltinDataset(job.data.dataset, data_dir, job.data.test_fraction, job.seed));
    auto partitioned =
        ml::PartitionForSilos(data.train, static_cast<int>(job.federation.silos.size()),
                              ml::PartitionOptions::ForJob(job), job.data.silo_test_fraction);
    if (!partitioned.ok()) return Annotate(partitioned.status(), "data.partition");
    parts = std::move(partitioned).value();
  }
  // Every TorchScript module -- the silos', the global model's -- runs in a
  // sandboxed worker, in simulation as in the federation.
  const ml::Sandbox sandbox = ml::Sandbox::ThisProgram();
  BusyClock busy;
  const SimulatedSiloOptions silo_options{data_dir, options.silo_policy,
                                          absl::StrCat(options.workdir, "/silos"), options.quiet};
  std::unique_ptr<orchestrator::SiloReach> reach;
  if (options.processes) {
    reach = std::make_unique<SiloProcesses>(silo_options);
  } else {
    reach = std::make_unique<InProcessSilos>(silo_options, std::move(parts), &sandbox, &busy,
                                             attack, options.attackers);
  }
  std::unique_ptr<BuiltinJobPreparer> preparer =
      silo_data ? std::make_unique<BuiltinJobPreparer>(data_dir, sandbox)
                : std::make_unique<BuiltinJobPreparer>(data, sandbox, &busy);
  orchestrator::JobRunOptions run_options;
  // With --processes, --threads still bounds how many silos train at once:
  // the silo processes share this machine's cores.
  run_options.threads = threads;
  run_options.progress = options.quiet ? nullptr : &progress;
  if (!options.quiet) {
    run_options.prepared = [&](const JobConfig& j, const orchestrator::PreparedJob& prepared) {
      PrintHeader(j, options, threads, run, prepared, data);
    };
  }
  FEDSILO_ASSIGN_OR_RETURN(orchestrator::RunResult result,
                           run.Run(reach.get(), preparer.get(), run_options));

  const tracking::RunDirectory& run_dir = run.run_dir();
  SimulationSummary summary;
  summary.run_id = run_dir.run_id();
  summary.run_dir = run_dir.path();
  summary.final_model = run_dir.final_model_path();
  summary.rounds_completed = result.rounds_completed;
  summary.final_metrics = result.final_metrics;
  summary.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  summary.overhead_fraction =
      options.processes || silo_data
          ? -1.0
          : std::max(0.0, 1.0 - busy.BusySeconds() / std::max(summary.wall_seconds, 1e-9));
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.summary_path(), summary.ToJson() + "\n"));
  return summary;
}

}  // namespace
}  // namespace fedsilo::cli
