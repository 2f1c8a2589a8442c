// `fedsilo run JOB`: a job in simulation (or, with --processes, with each
// silo as its own process on this machine).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/simulation.h"
#include "core/allocator.h"

namespace fedsilo::cli {
namespace {

struct RunOptions {
  std::string job_path;
  std::string resume;  // a run id or job id
  std::vector<std::string> sets;
  bool json = false;
  SimulationOptions sim;
};

Status Run(const RunOptions& options) {
  if (options.resume.empty() == options.job_path.empty()) {
    return absl::InvalidArgumentError(
        options.resume.empty() ? "give the job file to run (or --resume RUN to go on with one)"
                               : "--resume goes on with the run's recorded job: give no job file");
  }
  if (!options.resume.empty() && !options.sets.empty()) {
    return absl::InvalidArgumentError(
        "--set: a resumed run keeps its recorded job; run the job again to change it");
  }
  // Silo processes send and receive models: they keep freed memory for the
  // next round. In-process simulation is left alone: one shared malloc arena
  // slows its parallel training by about a fifth.
  if (options.sim.processes) TuneAllocatorForModels();
  // The run's own progress lines are its interface; session chatter from the
  // gRPC endpoint (with --processes) only matters when something goes wrong.
  spdlog::set_level(spdlog::level::warn);
  SimulationSummary summary;
  if (options.resume.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(JobConfig job, LoadJob(options.job_path, options.sets));
    FEDSILO_ASSIGN_OR_RETURN(summary, RunSimulation(job, options.sim));
  } else {
    FEDSILO_ASSIGN_OR_RETURN(summary, ResumeSimulation(options.resume, options.sim));
  }
  const auto metric = [&](const char* name) {
    auto it = summary.final_metrics.find(name);
    return it == summary.final_metrics.end() ? 0.0 : it->second;
  };
  if (!options.sim.quiet && !summary.predictions.empty()) {
    std::printf(
        "done: %lld people scored in %.1fs; the predictions, and their metrics, stay "
        "with the label owner\n",
        static_cast<long long>(summary.psi_intersection), summary.wall_seconds);
    std::printf("  run dir      %s\n  predictions  %s\n", summary.run_dir.c_str(),
                summary.predictions.c_str());
  } else if (!options.sim.quiet) {
    std::printf("done: %d rounds in %.1fs; global test accuracy %.4f, loss %.4f",
                summary.rounds_completed, summary.wall_seconds, metric("accuracy"), metric("loss"));
    if (summary.overhead_fraction >= 0) {
      std::printf("; orchestration overhead %.1f%%", 100.0 * summary.overhead_fraction);
    }
    std::printf("\n");
    std::printf("  run dir      %s\n  final model  %s\n", summary.run_dir.c_str(),
                summary.final_model.c_str());
  }
  if (options.json) std::printf("%s\n", summary.ToJson().c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterRunCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<RunOptions>();
  SimulationOptions& sim = options->sim;
  CLI::App* run = app.add_subcommand(
      "run",
      "Run a job in simulation: every silo in this process, each with a partition of the "
      "job's data set");
  run->add_option("job", options->job_path, "Job file (YAML)");
  run->add_option("--resume", options->resume,
                  "Go on with a run of --workdir that stopped (killed, or failed), by its run id "
                  "or job id: from the round after its last completed one, in the same run "
                  "folder");
  run->add_option("--set", options->sets,
                  "Override a job key by its dotted path, e.g. --set training.rounds=3 "
                  "(repeatable; the value is YAML)");
  run->add_flag("--json", options->json,
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
  run->add_option("--silo-policy", sim.silo_policy,
                  "Privacy policy (YAML) every silo applies; ledgers in <workdir>/silos/<name>/");
  run->add_option("--attack", sim.attack,
                  "Robustness experiments: the last --attackers silos send corrupted updates "
                  "(sign_flip: x -10; noise: Gaussian, 100x the update's RMS)");
  run->add_option("--attackers", sim.attackers, "How many silos --attack corrupts")
      ->check(CLI::Range(1, 10000));
  run->add_flag("--processes", sim.processes,
                "Run every silo as its own process, talking gRPC with mutual TLS to an "
                "orchestrator endpoint on 127.0.0.1 (a throwaway federation in the run dir)");
  commands.AddStorageKeysOption(run);
  commands.Add(run, kStateFiles, [options] { return Run(*options); });
}

}  // namespace fedsilo::cli
