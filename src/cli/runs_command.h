// `fedsilo runs list|show|compare|export`: the runs recorded in a work
// directory's run store (<workdir>/fedsilo.db, written by `fedsilo run`), or,
// with a user kit, in the orchestrator's (<state>/fedsilo.db, read through its
// Jobs.ListRuns and Jobs.GetRun calls). Both print the same.
//
// A run is named by its run id ("mnist-20261128-043151-c592"), a unique
// prefix of one, or its job id in the store ("job-3").
#ifndef FEDSILO_CLI_RUNS_COMMAND_H_
#define FEDSILO_CLI_RUNS_COMMAND_H_

#include <string>
#include <vector>

#include "cli/user_options.h"
#include "core/status.h"

namespace fedsilo::cli {

struct RunsOptions {
  std::string workdir = ".";
  UserOptions user;   // with a kit_dir: the orchestrator's runs instead of workdir's
  bool json = false;  // print JSON instead of tables
};

// One line per run, newest last: run id, experiment, job name, state, rounds,
// final global test accuracy, start time, owner.
Status RunsListCommand(const RunsOptions& options, const std::string& experiment);

// A run's record: its state, the silos' part (state, rounds, examples, epsilon,
// last seen), the global metrics of every round and the last events.
Status RunsShowCommand(const RunsOptions& options, const std::string& run);

// Side by side: the job keys whose values differ between the runs, then each
// run's rounds, wall time and final global metrics.
Status RunsCompareCommand(const RunsOptions& options, const std::vector<std::string>& runs);

// Every metric of the run as CSV, one row per round and one column per metric
// ("round,global/test_accuracy,...,silo-1/train_loss,..."); to `out`, or to
// standard output when `out` is empty or "-".
Status RunsExportCommand(const RunsOptions& options, const std::string& run,
                         const std::string& out);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_RUNS_COMMAND_H_
