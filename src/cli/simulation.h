// RunSimulation: `fedsilo run` — the whole federation in one process. Loads the
// job's data set, partitions it across the job's silos, and runs the
// orchestrator against in-process silo agents.
#ifndef FEDSILO_CLI_SIMULATION_H_
#define FEDSILO_CLI_SIMULATION_H_

#include <map>
#include <string>

#include "core/job_config.h"
#include "core/status.h"

namespace fedsilo::cli {

struct SimulationOptions {
  std::string workdir =
      ".";               // runs go to <workdir>/runs/<run_id>, the store to <workdir>/fedsilo.db
  std::string data_dir;  // empty = the default (FEDSILO_DATA or ./data of the source tree)
  int threads = 0;       // silos trained at once; 0 = number of cores
  bool quiet = false;    // no per-round progress lines
  // Run each silo as its own `fedsilo silo` process talking gRPC over mutual
  // TLS on 127.0.0.1, with a throwaway federation provisioned in the run dir.
  bool processes = false;
  // Every silo applies this privacy policy, with its ledger in
  // <workdir>/silos/<name>/privacy-ledger.json (kept across runs).
  std::string silo_policy;
  // Robustness experiments: the last `attackers` silos send corrupted
  // updates (cli/hostile_silo.h: "sign_flip" or "noise"). In-process only.
  std::string attack;
  int attackers = 0;
};

struct SimulationSummary {
  std::string run_id;
  std::string run_dir;
  std::string final_model;
  int rounds_completed = 0;
  std::map<std::string, double> final_metrics;  // global test metrics after the last round
  double wall_seconds = 0;
  // Wall time with no training or evaluation running; measured in-process
  // only (negative, and null in JSON, with --processes).
  double overhead_fraction = 0;
  // Vertical jobs: people in the private set intersection, and the parties
  // (psi_parties 0: not a vertical job, no `psi` in JSON).
  int64_t psi_intersection = 0;
  int psi_parties = 0;
  // A vertical job that predicts: the label owner's predictions file.
  std::string predictions;

  // The `--json` summary object (see DESIGN "Contracts").
  std::string ToJson() const;
};

// Runs the job and records it in the run store, <workdir>/fedsilo.db (its
// rounds, metrics, silos and events, and whether it finished or failed).
StatusOr<SimulationSummary> RunSimulation(const JobConfig& job, const SimulationOptions& options);

// Goes on with a run of <workdir>/fedsilo.db that stopped (killed, or
// failed): `run` is its run id or job id. Its recorded job runs from the
// round after its last committed one, in the same run folder, and ends with
// the model an uninterrupted run would have. InvalidArgument for an unknown
// or finished run, and for a SCAFFOLD job (its simulated silos' control
// variates were lost with the process).
StatusOr<SimulationSummary> ResumeSimulation(const std::string& run,
                                             const SimulationOptions& options);

// The run store of a work directory.
std::string RunStorePath(const std::string& workdir);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_SIMULATION_H_
