#include "orchestrator/run_views.h"

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedsilo::orchestrator {
namespace {

nlohmann::json RunJson(const JobRecord& j, const std::map<std::string, MetricRow>& latest) {
  nlohmann::json final_metrics = nlohmann::json::object();
  for (const auto& [name, m] : latest) {
    if (m.source == "global") final_metrics[name] = m.value;
  }
  return {{"run_id", j.run_id.empty() ? j.id : j.run_id},
          {"job_id", j.id},
          {"name", j.name},
          {"experiment", j.experiment},
          {"owner", j.owner},
          {"state", std::string(JobStateName(j.state))},
          {"rounds_total", j.rounds_total},
          {"rounds_completed", j.rounds_completed},
          {"created", j.created},
          {"started", j.started},
          {"finished", j.finished},
          {"error", j.error},
          {"final_metrics", final_metrics}};
}

}  // namespace

StatusOr<JobRecord> FindRun(const JobStore& store, const std::string& name) {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store.ListJobs());
  std::vector<const JobRecord*> prefixed;
  for (const JobRecord& j : jobs) {
    if (j.run_id == name || j.id == name) return j;
    if (!name.empty() && j.run_id.rfind(name, 0) == 0) prefixed.push_back(&j);
  }
  if (prefixed.size() == 1) return *prefixed.front();
  if (prefixed.size() > 1) {
    std::vector<std::string> ids;
    for (const JobRecord* j : prefixed) ids.push_back(j->run_id);
    return absl::InvalidArgumentError(absl::StrCat("run '", name, "' is ambiguous: it starts ",
                                                   absl::StrJoin(ids, ", ")));
  }
  std::string known;
  for (size_t i = jobs.size() > 5 ? jobs.size() - 5 : 0; i < jobs.size(); ++i) {
    absl::StrAppend(&known, known.empty() ? "" : ", ", jobs[i].run_id);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no run '", name, "' in ", store.path(),
                   known.empty() ? " (it holds no runs)" : absl::StrCat("; latest: ", known)));
}

StatusOr<std::vector<RunSummary>> ListRuns(const JobStore& store,
                                           const std::string& experiment) {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store.ListJobs());
  std::vector<RunSummary> runs;
  for (JobRecord& j : jobs) {
    if (!experiment.empty() && j.experiment != experiment) continue;
    FEDSILO_ASSIGN_OR_RETURN(auto latest, store.LatestMetrics(j.id));
    runs.push_back({std::move(j), std::move(latest)});
  }
  return runs;
}

StatusOr<RunData> LoadRun(const JobStore& store, const JobRecord& run) {
  RunData data;
  data.job = run;
  FEDSILO_ASSIGN_OR_RETURN(data.rounds, store.Rounds(run.id));
  FEDSILO_ASSIGN_OR_RETURN(data.metrics, store.Metrics(run.id));
  FEDSILO_ASSIGN_OR_RETURN(data.silos, store.Silos(run.id));
  FEDSILO_ASSIGN_OR_RETURN(data.events, store.Events(run.id, 0));
  return data;
}

StatusOr<RunData> FindAndLoadRun(const JobStore& store, const std::string& name) {
  FEDSILO_ASSIGN_OR_RETURN(JobRecord run, FindRun(store, name));
  return LoadRun(store, run);
}

std::map<std::string, MetricRow> LatestMetrics(const std::vector<MetricRow>& metrics) {
  std::map<std::string, MetricRow> latest;
  for (const MetricRow& m : metrics) {
    auto it = latest.find(m.name);
    if (it == latest.end() || it->second.round <= m.round) latest[m.name] = m;
  }
  return latest;
}

std::string RunListJson(const std::vector<RunSummary>& runs) {
  nlohmann::json out = nlohmann::json::array();
  for (const RunSummary& r : runs) out.push_back(RunJson(r.job, r.latest));
  return out.dump();
}

std::string RunDetailJson(const RunData& run) {
  std::map<int, nlohmann::json> global;  // round -> {metric: value}
  for (const MetricRow& m : run.metrics) {
    if (m.source == "global") global[m.round][m.name] = m.value;
  }
  nlohmann::json out = RunJson(run.job, LatestMetrics(run.metrics));
  out["job_yaml"] = run.job.job_yaml;
  nlohmann::json rj = nlohmann::json::array();
  for (const RoundRecord& r : run.rounds) {
    auto it = global.find(r.round);
    rj.push_back({{"round", r.round},
                  {"seconds", r.seconds},
                  {"finished", r.finished},
                  {"silos_sampled", r.silos_sampled},
                  {"silos_succeeded", r.silos_succeeded},
                  {"failures", r.failures},
                  {"metrics", it == global.end() ? nlohmann::json::object() : it->second}});
  }
  out["rounds"] = rj;
  nlohmann::json sj = nlohmann::json::array();
  for (const SiloRow& s : run.silos) {
    sj.push_back({{"silo", s.silo},
                  {"state", s.state},
                  {"rounds", s.rounds},
                  {"examples", s.examples},
                  {"epsilon", s.epsilon >= 0 ? nlohmann::json(s.epsilon) : nlohmann::json()},
                  {"last_seen", s.last_seen}});
  }
  out["silos"] = sj;
  nlohmann::json ej = nlohmann::json::array();
  for (const EventRow& e : run.events) {
    ej.push_back({{"seq", e.seq}, {"time", e.time}, {"level", e.level}, {"message", e.message}});
  }
  out["events"] = ej;
  return out.dump();
}

std::string RunMetricsJson(const std::vector<MetricRow>& metrics) {
  std::set<int> round_set;
  for (const MetricRow& m : metrics) round_set.insert(m.round);
  const std::vector<int> rounds(round_set.begin(), round_set.end());
  std::map<int, size_t> index;
  for (size_t i = 0; i < rounds.size(); ++i) index[rounds[i]] = i;
  std::map<std::string, nlohmann::json> series;
  for (const MetricRow& m : metrics) {
    nlohmann::json& values = series[m.name];
    if (values.is_null()) values = nlohmann::json(std::vector<nlohmann::json>(rounds.size()));
    values[index[m.round]] = m.value;
  }
  nlohmann::json out = {{"rounds", rounds}, {"series", nlohmann::json::object()}};
  for (auto& [name, values] : series) out["series"][name] = std::move(values);
  return out.dump();
}

}  // namespace fedsilo::orchestrator
