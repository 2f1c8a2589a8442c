// fedsilo: the command-line entry point. Argument parsing and wiring only.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/simulation.h"
#include "core/job_config.h"
#include "core/status.h"

namespace fedsilo::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitInvalidInput = 2;

int ReportError(const Status& status) {
  std::fprintf(stderr, "fedsilo: error: %s\n", std::string(status.message()).c_str());
  return IsInvalidInput(status) ? kExitInvalidInput : kExitFailure;
}

StatusOr<std::vector<ConfigOverride>> ParseOverrides(const std::vector<std::string>& sets) {
  std::vector<ConfigOverride> overrides;
  for (const std::string& s : sets) {
    FEDSILO_ASSIGN_OR_RETURN(ConfigOverride o, ParseOverride(s));
    overrides.push_back(std::move(o));
  }
  return overrides;
}

StatusOr<JobConfig> LoadJob(const std::string& path, const std::vector<std::string>& sets) {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<ConfigOverride> overrides, ParseOverrides(sets));
  return LoadJobConfig(path, overrides);
}

int Main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("fedsilo");
  logger->set_pattern("fedsilo: %l: %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"fedsilo: federated learning across data silos"};
  app.set_version_flag("--version", "fedsilo 0.1.0");
  app.require_subcommand(1);

  std::string job_path;
  std::vector<std::string> sets;
  bool json = false;
  SimulationOptions sim;

  CLI::App* run = app.add_subcommand(
      "run",
      "Run a job in simulation: every silo in this process, each with a partition of the "
      "job's data set");
  run->add_option("job", job_path, "Job file (YAML)")->required();
  run->add_option("--set", sets,
                  "Override a job key by its dotted path, e.g. --set training.rounds=3 "
                  "(repeatable; the value is YAML)");
  run->add_flag("--json", json,
                "Print a one-line JSON summary as the last line of standard output");
  run->add_option("--workdir", sim.workdir,
                  "Folder that receives runs/<run_id>/ (default: current folder)");
  run->add_option("--threads", sim.threads,
                  "Silos trained at the same time (default: number of cores); results do not "
                  "depend on it")
      ->check(CLI::Range(1, 1024));
  run->add_option("--data-dir", sim.data_dir,
                  "Folder holding the data sets (default: $FEDSILO_DATA, else the source tree's "
                  "data/)");
  run->add_flag("--quiet", sim.quiet, "No per-round progress lines");

  bool print_resolved = false;
  CLI::App* validate =
      app.add_subcommand("validate", "Check a job file and report the first error");
  validate->add_option("job", job_path, "Job file (YAML)")->required();
  validate->add_option("--set", sets, "Override a job key, as for `run`");
  validate->add_flag("--print", print_resolved,
                     "Print the resolved job (every key, defaults filled in)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitInvalidInput;
  }

  StatusOr<JobConfig> job = LoadJob(job_path, sets);
  if (!job.ok()) return ReportError(job.status());

  if (*validate) {
    if (print_resolved) {
      std::printf("%s", JobConfigToYaml(*job).c_str());
    } else {
      std::printf("%s: valid (%s, %zu silos, %s, %d rounds)\n", job_path.c_str(),
                  job->data.dataset.c_str(), job->federation.silos.size(),
                  std::string(ModelKindName(job->model.kind)).c_str(), job->training.rounds);
    }
    return kExitOk;
  }

  StatusOr<SimulationSummary> summary = RunSimulation(*job, sim);
  if (!summary.ok()) return ReportError(summary.status());
  const auto metric = [&](const char* name) {
    auto it = summary->final_metrics.find(name);
    return it == summary->final_metrics.end() ? 0.0 : it->second;
  };
  if (!sim.quiet) {
    std::printf(
        "done: %d rounds in %.1fs; global test accuracy %.4f, loss %.4f; "
        "orchestration overhead %.1f%%\n",
        summary->rounds_completed, summary->wall_seconds, metric("accuracy"), metric("loss"),
        100.0 * summary->overhead_fraction);
    std::printf("  run dir      %s\n  final model  %s\n", summary->run_dir.c_str(),
                summary->final_model.c_str());
  }
  if (json) std::printf("%s\n", summary->ToJson().c_str());
  return kExitOk;
}

}  // namespace
}  // namespace fedsilo::cli

int main(int argc, char** argv) { return fedsilo::cli::Main(argc, argv); }
