// `fedsilo run` of a vertical job (docs/vertical.md): every party in this
// process, each reading its own table from the job's catalog, the
// orchestrator's VerticalRun between them.
#ifndef FEDSILO_CLI_VERTICAL_SIMULATION_H_
#define FEDSILO_CLI_VERTICAL_SIMULATION_H_

#include "cli/simulation.h"
#include "core/status.h"
#include "orchestrator/job_run.h"

namespace fedsilo::cli {

// InvalidArgument when `options` or the job cannot run a vertical job in
// simulation (checked before anything is recorded); OK for other jobs.
Status CheckVerticalSimulation(const JobConfig& job, const SimulationOptions& options);

// Runs `run`'s vertical job. The parties' models are written, as each silo
// would keep its own, to <run dir>/parties/<party>/ (bottom.fsm, and
// top.fsm at the label owner). `progress` (may be null) is told of each
// round.
StatusOr<SimulationSummary> RunVerticalSimulation(const SimulationOptions& options,
                                                  orchestrator::JobRun& run,
                                                  orchestrator::RoundObserver* progress);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_VERTICAL_SIMULATION_H_
