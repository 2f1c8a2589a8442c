#include "cli/runs_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/command.h"
#include "cli/format.h"
#include "cli/jobs_client.h"
#include "cli/simulation.h"
#include "core/file_util.h"
#include "core/job_config.h"
#include "core/unix_time.h"
#include "orchestrator/job_store.h"
#include "orchestrator/run_proto.h"
#include "orchestrator/run_views.h"

namespace fedsilo::cli {
namespace {

using orchestrator::FindAndLoadRun;
using orchestrator::JobRecord;
using orchestrator::JobStore;
using orchestrator::LatestMetrics;
using orchestrator::ListRuns;
using orchestrator::MetricRow;
using orchestrator::RunData;
using orchestrator::RunDetailJson;
using orchestrator::RunListJson;
using orchestrator::RunSummary;

// Where the runs are read from: a work folder's store, or the orchestrator's
// through its user API.
class RunSource {
 public:
  virtual ~RunSource() = default;
  virtual StatusOr<std::vector<RunSummary>> List(const std::string& experiment) = 0;
  virtual StatusOr<RunData> Get(const std::string& run) = 0;
  // "<workdir>/fedsilo.db" or "the orchestrator at host:port".
  virtual std::string Where() const = 0;
};

class LocalRuns final : public RunSource {
 public:
  explicit LocalRuns(std::unique_ptr<JobStore> store) : store_(std::move(store)) {}
  StatusOr<std::vector<RunSummary>> List(const std::string& experiment) override {
    return ListRuns(*store_, experiment);
  }
  StatusOr<RunData> Get(const std::string& run) override { return FindAndLoadRun(*store_, run); }
  std::string Where() const override { return store_->path(); }

 private:
  std::unique_ptr<JobStore> store_;
};

class RemoteRuns final : public RunSource {
 public:
  explicit RemoteRuns(JobsClient client) : client_(std::move(client)) {}
  StatusOr<std::vector<RunSummary>> List(const std::string& experiment) override {
    fedsilo::v1::ListRunsRequest request;
    request.set_experiment(experiment);
    fedsilo::v1::ListRunsReply reply;
    auto context = client_.Context();
    FEDSILO_RETURN_IF_ERROR(
        client_.Check(client_.stub().ListRuns(context.get(), request, &reply), "ListRuns"));
    std::vector<RunSummary> runs;
    for (const auto& r : reply.runs()) runs.push_back(orchestrator::FromProto(r));
    return runs;
  }
  StatusOr<RunData> Get(const std::string& run) override {
    fedsilo::v1::GetRunRequest request;
    request.set_run(run);
    fedsilo::v1::Run reply;
    auto context = client_.Context();
    FEDSILO_RETURN_IF_ERROR(
        client_.Check(client_.stub().GetRun(context.get(), request, &reply), "GetRun"));
    return orchestrator::FromProto(reply);
  }
  std::string Where() const override {
    return absl::StrCat("the orchestrator at ", client_.target());
  }

 private:
  JobsClient client_;
};

StatusOr<std::unique_ptr<RunSource>> OpenRuns(const RunsOptions& options) {
  if (!options.user.kit_dir.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options.user));
    return std::unique_ptr<RunSource>(std::make_unique<RemoteRuns>(std::move(client)));
  }
  const std::string path = RunStorePath(options.workdir);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no run store here (`fedsilo run --workdir ", options.workdir,
                     " JOB` records its runs there; use --kit for the orchestrator's)"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store, JobStore::Open(path));
  return std::unique_ptr<RunSource>(std::make_unique<LocalRuns>(std::move(store)));
}

double Duration(const JobRecord& j) {
  if (j.started <= 0) return 0;
  return std::max(0.0, (j.finished > 0 ? j.finished : UnixNow()) - j.started);
}

// A run's wall time; "-" before it started.
std::string FormatWallTime(const JobRecord& j) {
  return j.started > 0 ? FormatDuration(Duration(j)) : "-";
}

std::string Metric(const std::map<std::string, MetricRow>& latest, const std::string& name) {
  auto it = latest.find(name);
  return it == latest.end() ? "-" : absl::StrFormat("%.4f", it->second.value);
}

// Prints rows as aligned columns (the first row is the header).
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      absl::StrAppend(&line, row[c]);
      if (c + 1 < row.size()) line.append(width[c] - row[c].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

Status RunsListCommand(const RunsOptions& options, const std::string& experiment) {
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<RunSource> source, OpenRuns(options));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<RunSummary> runs, source->List(experiment));
  if (options.json) {
    std::printf("%s\n", RunListJson(runs).c_str());
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows = {
      {"RUN", "EXPERIMENT", "JOB", "STATE", "ROUNDS", "ACCURACY", "STARTED", "OWNER"}};
  for (const RunSummary& r : runs) {
    const JobRecord& j = r.job;
    rows.push_back({j.run_id.empty() ? j.id : j.run_id, j.experiment, j.name,
                    std::string(orchestrator::JobStateName(j.state)),
                    absl::StrCat(j.rounds_completed, "/", j.rounds_total),
                    Metric(r.latest, "global/test_accuracy"), FormatTime(j.started), j.owner});
  }
  if (rows.size() == 1) {
    std::printf("no runs%s in %s\n",
                experiment.empty() ? "" : absl::StrCat(" in experiment '", experiment, "'").c_str(),
                source->Where().c_str());
  } else {
    PrintTable(rows);
  }
  return absl::OkStatus();
}

Status RunsShowCommand(const RunsOptions& options, const std::string& run) {
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<RunSource> source, OpenRuns(options));
  FEDSILO_ASSIGN_OR_RETURN(RunData data, source->Get(run));
  if (options.json) {
    std::printf("%s\n", RunDetailJson(data).c_str());
    return absl::OkStatus();
  }
  const JobRecord& j = data.job;
  const auto& rounds = data.rounds;
  const auto& metrics = data.metrics;
  const auto& silos = data.silos;
  const auto& events = data.events;
  // round -> global metric -> value
  std::map<int, std::map<std::string, double>> global;
  std::set<std::string> global_names;
  for (const MetricRow& m : metrics) {
    if (m.source != "global") continue;
    global[m.round][m.name] = m.value;
    global_names.insert(m.name);
  }
  std::printf("%s  %s  (job %s, %s, experiment %s, owner %s)\n", j.run_id.c_str(),
              std::string(orchestrator::JobStateName(j.state)).c_str(), j.id.c_str(),
              j.name.c_str(), j.experiment.c_str(), j.owner.c_str());
  std::printf("  rounds    %d of %d\n", j.rounds_completed, j.rounds_total);
  std::printf("  started   %s   finished %s   (%s)\n", FormatTime(j.started).c_str(),
              FormatTime(j.finished).c_str(), FormatWallTime(j).c_str());
  if (!j.error.empty()) std::printf("  error     %s\n", j.error.c_str());
  std::printf("\nsilos\n");
  std::vector<std::vector<std::string>> silo_rows = {
      {"  SILO", "STATE", "ROUNDS", "EXAMPLES", "EPSILON", "LAST SEEN"}};
  for (const auto& s : silos) {
    silo_rows.push_back({"  " + s.silo, s.state, absl::StrCat(s.rounds),
                         s.examples > 0 ? absl::StrCat(s.examples) : "-",
                         s.epsilon >= 0 ? absl::StrFormat("%.3f", s.epsilon) : "-",
                         FormatTime(s.last_seen)});
  }
  PrintTable(silo_rows);
  std::printf("\nrounds\n");
  std::vector<std::vector<std::string>> round_rows = {{"  ROUND", "SECONDS", "SILOS"}};
  for (const std::string& name : global_names) round_rows[0].push_back(name);
  for (const auto& r : rounds) {
    std::vector<std::string> row = {"  " + absl::StrCat(r.round),
                                    absl::StrFormat("%.1f", r.seconds),
                                    absl::StrCat(r.silos_succeeded, "/", r.silos_sampled)};
    for (const std::string& name : global_names) {
      auto it = global[r.round].find(name);
      row.push_back(it == global[r.round].end() ? "-" : absl::StrFormat("%.4f", it->second));
    }
    round_rows.push_back(std::move(row));
  }
  PrintTable(round_rows);
  constexpr size_t kLastEvents = 10;
  std::printf("\nevents%s\n", events.size() > kLastEvents ? " (the last 10)" : "");
  for (size_t i = events.size() > kLastEvents ? events.size() - kLastEvents : 0; i < events.size();
       ++i) {
    std::printf("  %s  %-5s  %s\n", FormatTime(events[i].time).c_str(), events[i].level.c_str(),
                events[i].message.c_str());
  }
  return absl::OkStatus();
}

Status RunsCompareCommand(const RunsOptions& options, const std::vector<std::string>& runs) {
  if (runs.size() < 2) {
    return absl::InvalidArgumentError("runs compare needs at least two runs");
  }
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<RunSource> source, OpenRuns(options));
  std::vector<JobRecord> jobs;
  std::vector<std::map<std::string, std::string>> params;
  std::vector<std::string> keys;  // in the first run's order, then any new ones
  std::set<std::string> seen_keys;
  std::vector<std::map<std::string, MetricRow>> latest;
  for (const std::string& name : runs) {
    FEDSILO_ASSIGN_OR_RETURN(RunData data, source->Get(name));
    JobRecord& j = data.job;
    FEDSILO_ASSIGN_OR_RETURN(JobConfig job,
                             ParseJobConfig(j.job_yaml, absl::StrCat(j.run_id, " job")));
    std::map<std::string, std::string> flat;
    for (auto& [key, value] : FlattenJobConfig(job)) {
      if (seen_keys.insert(key).second) keys.push_back(key);
      flat[key] = std::move(value);
    }
    latest.push_back(LatestMetrics(data.metrics));
    params.push_back(std::move(flat));
    jobs.push_back(std::move(j));
  }
  std::vector<std::string> differing;
  for (const std::string& key : keys) {
    for (size_t i = 1; i < params.size(); ++i) {
      if (params[i][key] != params[0][key]) {
        differing.push_back(key);
        break;
      }
    }
  }
  std::set<std::string> metric_names;
  for (const auto& l : latest) {
    for (const auto& [name, m] : l) {
      if (m.source == "global") metric_names.insert(name);
    }
  }
  if (options.json) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < jobs.size(); ++i) {
      nlohmann::json r = {{"run_id", jobs[i].run_id},
                          {"job_id", jobs[i].id},
                          {"state", std::string(orchestrator::JobStateName(jobs[i].state))},
                          {"rounds_completed", jobs[i].rounds_completed},
                          {"rounds_total", jobs[i].rounds_total}};
      nlohmann::json diff = nlohmann::json::object();
      for (const std::string& key : differing) diff[key] = params[i][key];
      r["differing_keys"] = diff;
      nlohmann::json final_metrics = nlohmann::json::object();
      for (const std::string& name : metric_names) {
        auto it = latest[i].find(name);
        if (it != latest[i].end()) final_metrics[name] = it->second.value;
      }
      r["final_metrics"] = final_metrics;
      r["wall_seconds"] = Duration(jobs[i]);
      out.push_back(r);
    }
    std::printf("%s\n", out.dump().c_str());
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows = {{""}};
  for (const JobRecord& j : jobs) rows[0].push_back(j.run_id);
  auto add_row = [&](const std::string& label, auto value_of) {
    std::vector<std::string> row = {label};
    for (size_t i = 0; i < jobs.size(); ++i) row.push_back(value_of(i));
    rows.push_back(std::move(row));
  };
  for (const std::string& key : differing) {
    add_row(key, [&](size_t i) {
      auto it = params[i].find(key);
      return it == params[i].end() ? std::string("-") : it->second;
    });
  }
  if (differing.empty()) add_row("(same job)", [](size_t) { return std::string(); });
  add_row("state",
          [&](size_t i) { return std::string(orchestrator::JobStateName(jobs[i].state)); });
  add_row("rounds", [&](size_t i) {
    return absl::StrCat(jobs[i].rounds_completed, "/", jobs[i].rounds_total);
  });
  add_row("wall time", [&](size_t i) { return FormatWallTime(jobs[i]); });
  for (const std::string& name : metric_names) {
    add_row(name, [&](size_t i) { return Metric(latest[i], name); });
  }
  PrintTable(rows);
  return absl::OkStatus();
}

Status RunsExportCommand(const RunsOptions& options, const std::string& run,
                         const std::string& out) {
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<RunSource> source, OpenRuns(options));
  FEDSILO_ASSIGN_OR_RETURN(RunData data, source->Get(run));
  const JobRecord& j = data.job;
  const auto& metrics = data.metrics;
  std::map<int, std::map<std::string, double>> by_round;
  std::set<std::string> silo_names, global_names;
  for (const MetricRow& m : metrics) {
    by_round[m.round][m.name] = m.value;
    (m.source == "global" ? global_names : silo_names).insert(m.name);
  }
  std::vector<std::string> columns(global_names.begin(), global_names.end());
  columns.insert(columns.end(), silo_names.begin(), silo_names.end());
  std::string csv = "round";
  for (const std::string& c : columns) absl::StrAppend(&csv, ",", c);
  csv += "\n";
  for (const auto& [round, values] : by_round) {
    absl::StrAppend(&csv, round);
    for (const std::string& c : columns) {
      auto it = values.find(c);
      csv += ",";
      if (it != values.end()) absl::StrAppend(&csv, absl::StrFormat("%.10g", it->second));
    }
    csv += "\n";
  }
  if (out.empty() || out == "-") {
    std::fwrite(csv.data(), 1, csv.size(), stdout);
    return absl::OkStatus();
  }
  FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(out, csv));
  std::fprintf(stderr, "wrote %zu rounds x %zu metrics of %s to %s\n", by_round.size(),
               columns.size(), j.run_id.c_str(), out.c_str());
  return absl::OkStatus();
}

void RegisterRunsCommand(CLI::App& app, Commands& commands) {
  struct Options {
    RunsOptions runs;
    std::string experiment, out;
    std::vector<std::string> names;
    bool csv = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* runs = app.add_subcommand(
      "runs",
      "Runs recorded in a work folder's run store (or the orchestrator's, with --kit): list, "
      "show, compare, export");
  runs->require_subcommand(1);
  auto runs_command = [&](const char* name, const char* help) {
    CLI::App* c = runs->add_subcommand(name, help);
    CLI::Option* workdir =
        c->add_option("--workdir", options->runs.workdir,
                      "Work folder whose fedsilo.db to read (default: current folder)");
    c->add_option("--kit", options->runs.user.kit_dir,
                  "Your user kit folder: read the orchestrator's runs instead")
        ->excludes(workdir);
    c->add_option("--orchestrator", options->runs.user.orchestrator,
                  "host:port to dial with --kit (default: the kit's)");
    c->add_flag("--insecure", options->runs.user.insecure,
                "Call WITHOUT TLS (only against an orchestrator run with --insecure)");
    commands.AddStorageKeysOption(c);
    return c;
  };
  CLI::App* list = runs_command("list", "One line per run, oldest first");
  list->add_option("--experiment", options->experiment, "Only the runs of this experiment");
  list->add_flag("--json", options->runs.json, "Print JSON");
  commands.Add(list, kStateFiles,
               [options] { return RunsListCommand(options->runs, options->experiment); });
  CLI::App* show =
      runs_command("show", "A run's silos, rounds with their global metrics, and events");
  show->add_option("run", options->names, "Run id (or a unique prefix, or job id)")
      ->required()
      ->expected(1);
  show->add_flag("--json", options->runs.json, "Print JSON");
  commands.Add(show, kStateFiles,
               [options] { return RunsShowCommand(options->runs, options->names.front()); });
  CLI::App* compare =
      runs_command("compare", "Runs side by side: the job keys that differ, and the final metrics");
  compare->add_option("runs", options->names, "Two or more runs")->required()->expected(2, -1);
  compare->add_flag("--json", options->runs.json, "Print JSON");
  commands.Add(compare, kStateFiles,
               [options] { return RunsCompareCommand(options->runs, options->names); });
  CLI::App* csv = runs_command("export", "Every metric of a run, one row per round (CSV)");
  csv->add_option("run", options->names, "Run id (or a unique prefix, or job id)")
      ->required()
      ->expected(1);
  csv->add_flag("--csv", options->csv, "CSV (the only format, and the default)");
  csv->add_option("--out,-o", options->out, "Output file (default: standard output)");
  commands.Add(csv, kStateFiles, [options] {
    return RunsExportCommand(options->runs, options->names.front(), options->out);
  });
}

}  // namespace fedsilo::cli
