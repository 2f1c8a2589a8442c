// What a run store says about its runs, in one shape for every reader:
// `fedsilo runs` (from a work folder's store, or from the orchestrator's over
// the user API), the dashboard's HTTP API and the Jobs.ListRuns / GetRun RPCs.
//
// JSON views, shared by `fedsilo runs --json` and the dashboard:
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

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "orchestrator/job_store.h"

namespace fedsilo::orchestrator {

// A run as listed: its record and the latest value of each of its metrics.
struct RunSummary {
  JobRecord job;
  std::map<std::string, MetricRow> latest;  // by metric name
};

// Everything recorded of one run.
struct RunData {
  JobRecord job;
  std::vector<RoundRecord> rounds;
  std::vector<MetricRow> metrics;  // in recording order
  std::vector<SiloRow> silos;
  std::vector<EventRow> events;
};

// The run named by its run id, a unique prefix of one, or its job id.
// InvalidArgument naming the store (and the latest runs) otherwise.
StatusOr<JobRecord> FindRun(const JobStore& store, const std::string& name);

// Runs oldest first; only `experiment`'s when it is not empty.
StatusOr<std::vector<RunSummary>> ListRuns(const JobStore& store, const std::string& experiment);
StatusOr<RunData> LoadRun(const JobStore& store, const JobRecord& run);
// FindRun, then LoadRun.
StatusOr<RunData> FindAndLoadRun(const JobStore& store, const std::string& name);

// The latest value of every metric (by name); later rounds win.
std::map<std::string, MetricRow> LatestMetrics(const std::vector<MetricRow>& metrics);

std::string RunListJson(const std::vector<RunSummary>& runs);
std::string RunDetailJson(const RunData& run);
std::string RunMetricsJson(const std::vector<MetricRow>& metrics);

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_RUN_VIEWS_H_
