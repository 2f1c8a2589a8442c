// JSON views of the runs in a JobStore, shared by `fedsilo runs --json` and
// the dashboard's HTTP API, so both say the same thing:
//   RunListJson      [{run_id, job_id, name, experiment, owner, state,
//                    rounds_total, rounds_completed, created, started,
//                    finished, error, final_metrics: {global/...: v}}]
//   RunDetailJson    one run as above plus job_yaml, rounds [{round, seconds,
//                    silos_sampled, silos_succeeded, failures, metrics}],
//                    silos [{silo, state, rounds, examples, epsilon|null,
//                    last_seen}] and events [{seq, time, level, message}]
//   RunMetricsJson   {"rounds": [1, 2, ...], "series": {"silo-1/train_loss":
//                    [v | null, ...]}}: every metric, aligned with rounds
#ifndef FEDSILO_ORCHESTRATOR_RUN_VIEWS_H_
#define FEDSILO_ORCHESTRATOR_RUN_VIEWS_H_

#include <string>

#include "core/status.h"
#include "orchestrator/job_store.h"

namespace fedsilo::orchestrator {

// The run named by its run id, a unique prefix of one, or its job id.
// InvalidArgument naming the store (and the latest runs) otherwise.
StatusOr<JobRecord> FindRun(const JobStore& store, const std::string& name);

// Runs oldest first; only `experiment`'s when it is not empty.
StatusOr<std::string> RunListJson(const JobStore& store, const std::string& experiment);
StatusOr<std::string> RunDetailJson(const JobStore& store, const JobRecord& run);
StatusOr<std::string> RunMetricsJson(const JobStore& store, const JobRecord& run);

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_RUN_VIEWS_H_
