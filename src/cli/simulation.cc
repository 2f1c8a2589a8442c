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
#include "cli/hostile_silo.h"
#include "cli/local_federation.h"
#include "core/busy_clock.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "ml/dataset_catalog.h"
#include "ml/model.h"
#include "ml/partitioner.h"
#include "ml/sandbox.h"
#include "ml/tabular.h"
#include "orchestrator/job_store.h"
#include "orchestrator/mlflow_export.h"
#include "orchestrator/orchestrator.h"
#include "orchestrator/round_recorder.h"
#include "secure/secagg.h"
#include "silo/privacy_guard.h"
#include "silo/silo_agent.h"
#include "silo/silo_runtime.h"
#include "strategy/strategy.h"
#include "tracking/jsonl_metrics_sink.h"
#include "tracking/run_directory.h"
#include "transport/in_process_transport.h"

namespace fedsilo::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Prints one line per round: progress, global metrics, timing and an estimate
// of the time left.
// Records the round first (`record`).
class ProgressPrinter : public orchestrator::RoundObserver {
 public:
  ProgressPrinter(bool quiet, orchestrator::RoundObserver* record)
      : quiet_(quiet), record_(record) {}

  Status OnRoundEnd(const orchestrator::RoundSummary& s, const ModelState& global,
                    int total) override {
    FEDSILO_RETURN_IF_ERROR(record_->OnRoundEnd(s, global, total));
    if (quiet_) return absl::OkStatus();
    const double eta = s.elapsed_seconds / s.round * (total - s.round);
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
  bool quiet_;
  orchestrator::RoundObserver* record_;
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

// The run itself; `*job_id` is set once it is in the store.
StatusOr<SimulationSummary> RunAndRecord(JobConfig job, const SimulationOptions& options,
                                         const std::optional<Attack>& attack,
                                         orchestrator::JobStore* store, std::string* job_id,
                                         std::unique_ptr<orchestrator::MlflowExport>* mlflow);

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
  return j.dump();
}

std::string RunStorePath(const std::string& workdir) { return workdir + "/fedsilo.db"; }

StatusOr<SimulationSummary> RunSimulation(const JobConfig& job, const SimulationOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(const std::optional<Attack> attack, CheckAttack(job, options));
  std::error_code ec;
  std::filesystem::create_directories(options.workdir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workdir ", options.workdir, ": cannot create it: ", ec.message()));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store,
                           orchestrator::JobStore::Open(RunStorePath(options.workdir)));
  std::string job_id;
  std::unique_ptr<orchestrator::MlflowExport> mlflow;
  StatusOr<SimulationSummary> summary =
      RunAndRecord(job, options, attack, store.get(), &job_id, &mlflow);
  const orchestrator::JobState state =
      summary.ok() ? orchestrator::JobState::kDone : orchestrator::JobState::kFailed;
  if (mlflow != nullptr) {
    const tracking::MlflowExportReport report = mlflow->Finish(state);
    if (!options.quiet && !report.run_id.empty()) {
      std::printf("  mlflow  run %s at %s: %lld metrics sent%s\n", report.run_id.c_str(),
                  job.tracking.mlflow.uri.c_str(), static_cast<long long>(report.metrics_sent),
                  report.complete() ? "" : " (incomplete: see the warnings above)");
    }
  }
  if (!job_id.empty()) {
    Status recorded =
        store->SetState(job_id, state, summary.ok() ? "" : std::string(summary.status().message()));
    if (summary.ok() && !recorded.ok()) return recorded;
  }
  return summary;
}

namespace {

StatusOr<SimulationSummary> RunAndRecord(JobConfig job, const SimulationOptions& options,
                                         const std::optional<Attack>& attack,
                                         orchestrator::JobStore* store, std::string* job_id,
                                         std::unique_ptr<orchestrator::MlflowExport>* mlflow) {
  const Clock::time_point start = Clock::now();
  const std::string data_dir = options.data_dir.empty() ? ml::DefaultDataDir() : options.data_dir;
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  if (!IsBuiltinDataset(job.data.dataset) && job.data.catalog.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset: '", job.data.dataset, "' is not a built-in data set (",
        absl::StrJoin(kKnownDatasets, ", "),
        "); to simulate silos with their own files, give data.catalog: a dataset catalog "
        "(datasets.yaml) whose csv paths may hold {silo}"));
  }
  // Recorded first, so that a run that fails on its data is on record too.
  FEDSILO_ASSIGN_OR_RETURN(
      tracking::RunDirectory run_dir,
      tracking::RunDirectory::Create(options.workdir, job.name, std::chrono::system_clock::now()));
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.job_path(), JobConfigToYaml(job)));
  FEDSILO_ASSIGN_OR_RETURN(auto sink, tracking::JsonlMetricsSink::Open(run_dir.metrics_path()));
  orchestrator::JobRecord record;
  record.name = job.name;
  record.owner = LocalUser();
  record.job_yaml = JobConfigToYaml(job);
  record.run_id = run_dir.run_id();
  record.rounds_total = job.training.rounds;
  record.experiment = job.experiment;
  FEDSILO_ASSIGN_OR_RETURN(record, store->CreateJob(std::move(record)));
  *job_id = record.id;
  FEDSILO_RETURN_IF_ERROR(store->AddSilos(record.id, job.federation.silos));
  FEDSILO_RETURN_IF_ERROR(store->SetState(record.id, orchestrator::JobState::kRunning));
  *mlflow = orchestrator::MlflowExport::Start(job, record, run_dir);
  tracking::FanOutSink metrics_out({sink.get(), *mlflow ? (*mlflow)->sink() : nullptr});
  orchestrator::RoundRecorder recorder(store, record.id, &metrics_out);

  // Built-in data is partitioned here; a catalog's data stays with each
  // simulated silo, which reads its own file.
  const bool silo_data = !IsBuiltinDataset(job.data.dataset);
  const int num_silos = static_cast<int>(job.federation.silos.size());
  ml::DatasetSplits data;
  std::vector<ml::SiloData> silo_data_parts;
  if (!silo_data) {
    FEDSILO_ASSIGN_OR_RETURN(
        data, ml::LoadBuiltinDataset(job.data.dataset, data_dir, job.data.test_fraction, job.seed));
    const ml::PartitionOptions partition = ml::PartitionOptions::ForJob(job);
    auto partitioned =
        ml::PartitionForSilos(data.train, num_silos, partition, job.data.silo_test_fraction);
    if (!partitioned.ok()) return Annotate(partitioned.status(), "data.partition");
    silo_data_parts = std::move(partitioned).value();
  }
  const auto print_header = [&](const ml::Model& model) {
    if (options.quiet) return;
    std::printf("fedsilo: run %s\n", run_dir.run_id().c_str());
    if (silo_data) {
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
    std::printf("  model   %s\n", model.Describe().c_str());
    std::printf("  rounds  %d, %s, %d silo(s) training at once\n", job.training.rounds,
                job.strategy.name.c_str(), threads);
    if (options.attackers > 0 && options.attackers <= num_silos) {
      std::vector<std::string> names(job.federation.silos.end() - options.attackers,
                                     job.federation.silos.end());
      std::printf("  attack  %s updates from %s\n", options.attack.c_str(),
                  absl::StrJoin(names, ", ").c_str());
    }
    if (*mlflow != nullptr) {
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
          secure::SecAggThreshold(sa.threshold, sampled, job.federation.min_silos), sampled,
          sa.bits, sa.clip_range);
    }
    std::fflush(stdout);
  };
  // Every TorchScript module -- the silos', the global model's -- runs in a
  // sandboxed worker, in simulation as in the federation.
  const ml::Sandbox sandbox = ml::Sandbox::ThisProgram();
  std::unique_ptr<ml::Model> global_model;
  ModelState initial;
  if (!silo_data) {
    const ml::ModelSpec spec{job.model, data.train->example_shape, data.train->num_classes};
    FEDSILO_ASSIGN_OR_RETURN(global_model, ml::Model::Create(spec, job.seed, &sandbox));
    initial = global_model->GetState();
    print_header(*global_model);
  }

  BusyClock busy;
  std::vector<std::unique_ptr<silo::PrivacyGuard>> guards;  // outlive the agents
  std::vector<std::unique_ptr<HostileSilo>> hostile;
  std::vector<std::unique_ptr<silo::SiloAgent>> agents;
  std::vector<std::unique_ptr<silo::SiloRuntime>> runtimes;
  std::vector<std::unique_ptr<transport::SiloConnection>> connections;
  std::unique_ptr<LocalFederation> federation;
  if (options.processes) {
    FEDSILO_ASSIGN_OR_RETURN(
        federation,
        LocalFederation::Start(job, run_dir.path(), data_dir,
                               std::chrono::seconds(job.federation.wait_for_silos),
                               options.silo_policy, absl::StrCat(options.workdir, "/silos")));
    if (!options.quiet) {
      std::printf("  silos   %d processes, gRPC + mutual TLS on 127.0.0.1:%d (logs in %s/silos)\n",
                  num_silos, federation->port(), run_dir.path().c_str());
      std::fflush(stdout);
    }
    connections = federation->Connections(std::chrono::seconds(job.federation.round_timeout));
  } else {
    for (int i = 0; i < num_silos; ++i) {
      const std::string& name = job.federation.silos[i];
      // Each simulated silo applies a policy as a silo process would: the
      // --silo-policy one with its ledger in the work folder, or the defaults
      // with a ledger in memory.
      FEDSILO_ASSIGN_OR_RETURN(
          auto opened, silo::PrivacyGuard::Open(options.silo_policy,
                                                options.silo_policy.empty()
                                                    ? std::string()
                                                    : absl::StrCat(options.workdir, "/silos/", name,
                                                                   "/privacy-ledger.json")));
      silo::PrivacyGuard* guard = opened.get();
      guards.push_back(std::move(opened));
      transport::SiloHandler* handler = nullptr;
      if (silo_data) {
        // Each silo reads its own file, as a silo process would.
        FEDSILO_ASSIGN_OR_RETURN(silo::DatasetCatalog catalog,
                                 silo::LoadDatasetCatalog(job.data.catalog, name));
        runtimes.push_back(
            std::make_unique<silo::SiloRuntime>(name, std::move(catalog), data_dir, guard));
        runtimes.back()->SetSandbox(&sandbox);
        if (job.model.kind == ModelKind::kTorchScript) {
          // The job's own module, on this machine (as --processes gives it).
          runtimes.back()->SetModelsDir(
              std::filesystem::path(job.model.torchscript).parent_path().string());
        }
        handler = runtimes.back().get();
      } else {
        agents.push_back(
            std::make_unique<silo::SiloAgent>(name, std::move(silo_data_parts[i]), &busy));
        agents.back()->SetSandbox(&sandbox);
        agents.back()->SetPrivacyGuard(guard, job.data.dataset);
        handler = agents.back().get();
      }
      if (attack.has_value() && i >= num_silos - options.attackers) {
        hostile.push_back(std::make_unique<HostileSilo>(handler, *attack, job.seed + i));
        handler = hostile.back().get();
      }
      connections.push_back(
          std::make_unique<transport::InProcessConnection>(job.federation.silos[i], handler));
    }
  }
  std::unique_ptr<HeldOutEvaluator> evaluator;
  if (!silo_data) {
    evaluator = std::make_unique<HeldOutEvaluator>(std::move(global_model),
                                                   ml::DataView::All(data.test), &busy);
  }
  FEDSILO_ASSIGN_OR_RETURN(
      auto strategy,
      strategy::CreateStrategy(job.strategy, static_cast<int>(job.federation.silos.size())));
  // With --processes, --threads still bounds how many silos train at once:
  // the silo processes share this machine's cores.
  orchestrator::OrchestratorOptions orchestrator_options{run_dir.run_id(), threads};
  if (federation != nullptr) orchestrator_options.federation_ca_pem = federation->ca_pem();
  orchestrator::Orchestrator orchestrator(job, orchestrator_options, std::move(connections),
                                          std::move(strategy), evaluator.get(), &recorder,
                                          &run_dir);
  if (silo_data) {
    // The federated statistics complete the job: the model's input is known
    // once the silos have described their rows.
    StatusOr<FeatureStatistics> st = orchestrator.ComputeStatistics();
    if (!st.ok()) return st.status();
    job.preprocess.statistics = *std::move(st);
    const std::string resolved = JobConfigToYaml(job);
    FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.job_path(), resolved));
    FEDSILO_RETURN_IF_ERROR(store->SetJobYaml(record.id, resolved));
    FEDSILO_ASSIGN_OR_RETURN(global_model,
                             ml::Model::Create(ml::TabularModelSpec(job), job.seed, &sandbox));
    print_header(*global_model);
    initial = global_model->GetState();
  }
  ProgressPrinter progress(options.quiet, &recorder);
  FEDSILO_ASSIGN_OR_RETURN(orchestrator::RunResult result,
                           orchestrator.Run(std::move(initial), &progress));
  FEDSILO_RETURN_IF_ERROR(
      WriteModelStateFile(run_dir.final_model_path(), result.final_model,
                          {{"job", job.name}, {"round", std::to_string(result.rounds_completed)}}));
  if (job.model.kind == ModelKind::kTorchScript) {
    // The trained weights in the module the data scientist gave: loads in Python.
    FEDSILO_ASSIGN_OR_RETURN(
        std::string final_pt,
        ml::Model::TorchScriptWithState(job.model.torchscript, result.final_model, &sandbox));
    FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.final_torchscript_path(), final_pt));
  }

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
