#include "cli/vertical_simulation.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "silo/dataset_catalog.h"
#include "silo/vertical_party.h"

namespace fedsilo::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Each party as its silo would make it: from its own catalog's entry.
StatusOr<std::vector<std::unique_ptr<silo::VerticalPartyAgent>>> MakeParties(const JobConfig& job) {
  std::vector<std::unique_ptr<silo::VerticalPartyAgent>> parties;
  for (const std::string& name : job.federation.silos) {
    FEDSILO_ASSIGN_OR_RETURN(silo::DatasetCatalog catalog,
                             silo::LoadDatasetCatalog(SiloCatalog(job.data, name), name));
    auto entry = catalog.find(job.data.dataset);
    if (entry == catalog.end()) {
      return absl::InvalidArgumentError(absl::StrCat("party '", name,
                                                     "': ", SiloCatalog(job.data, name),
                                                     " has no dataset '", job.data.dataset, "'"));
    }
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<silo::VerticalPartyAgent> party,
                             silo::VerticalPartyAgent::Create(name, job, entry->second));
    parties.push_back(std::move(party));
  }
  return parties;
}

void PrintHeader(const JobConfig& job, const orchestrator::JobRun& run,
                 const std::vector<std::unique_ptr<silo::VerticalPartyAgent>>& parties) {
  std::printf("fedsilo: run %s\n", run.run_dir().run_id().c_str());
  std::printf("  data    %s: vertical, %zu parties, label at %s\n", job.data.dataset.c_str(),
              parties.size(), job.vertical.label_owner.c_str());
  for (const auto& p : parties) {
    std::printf("          %-10s %lld rows, %zu features\n", p->name().c_str(),
                static_cast<long long>(p->rows()), p->features().size());
  }
  std::printf(
      "  model   split: bottom %s to %d at each party, top %s\n",
      job.model.kind == ModelKind::kMlp && !job.model.hidden.empty()
          ? absl::StrCat("mlp [", absl::StrJoin(job.model.hidden, ", "), "]").c_str()
          : "linear",
      job.vertical.cut_width,
      job.vertical.top_hidden.empty()
          ? "linear"
          : absl::StrCat("mlp [", absl::StrJoin(job.vertical.top_hidden, ", "), "]").c_str());
  std::printf("  rounds  %d (each %d pass%s over the aligned training rows)\n", job.training.rounds,
              job.training.local_epochs, job.training.local_epochs == 1 ? "" : "es");
  std::fflush(stdout);
}

}  // namespace

Status CheckVerticalSimulation(const JobConfig& job, const SimulationOptions& options) {
  if (job.kind != JobKind::kVertical) return absl::OkStatus();
  if (options.processes) {
    return absl::InvalidArgumentError(
        "--processes: a vertical job's parties run in this process in this release; drop "
        "--processes");
  }
  if (!options.silo_policy.empty() || !options.attack.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.attack.empty() ? "--silo-policy" : "--attack",
                     ": not for vertical jobs in this release"));
  }
  if (job.data.catalog.empty()) {
    return absl::InvalidArgumentError(
        "data.catalog: a vertical job in simulation needs the parties' dataset catalogs "
        "(`catalogs/{silo}.yaml`: each party's own, or one whose paths hold `{silo}`)");
  }
  return absl::OkStatus();
}

StatusOr<SimulationSummary> RunVerticalSimulation(const SimulationOptions& options,
                                                  orchestrator::JobRun& run,
                                                  orchestrator::RoundObserver* progress) {
  const JobConfig& job = run.job();
  const Clock::time_point start = Clock::now();
  FEDSILO_ASSIGN_OR_RETURN(auto parties, MakeParties(job));
  if (!options.quiet) PrintHeader(job, run, parties);
  std::vector<transport::VerticalParty*> reach;
  for (const auto& p : parties) reach.push_back(p.get());
  orchestrator::JobRunOptions run_options;
  run_options.progress = progress;
  if (!options.quiet) {
    run_options.event = [](const std::string& level, const std::string& message) {
      if (level == "info") std::printf("  %s\n", message.c_str());
    };
  }
  FEDSILO_ASSIGN_OR_RETURN(orchestrator::VerticalResult result,
                           run.RunVertical(reach, run_options));
  // Each party keeps its own part, as its silo would.
  const tracking::RunDirectory& run_dir = run.run_dir();
  const std::string parties_dir = run_dir.path() + "/parties";
  for (const auto& p : parties) {
    const std::string dir = absl::StrCat(parties_dir, "/", p->name());
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(parties_dir));
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir));
    const std::map<std::string, std::string> metadata = {
        {"job", job.name},
        {"party", p->name()},
        {"round", std::to_string(result.rounds_completed)}};
    FEDSILO_RETURN_IF_ERROR(WriteModelStateFile(dir + "/bottom.fsm", p->BottomState(), metadata));
    if (p->label_owner()) {
      FEDSILO_RETURN_IF_ERROR(WriteModelStateFile(dir + "/top.fsm", p->TopState(), metadata));
    }
  }
  SimulationSummary summary;
  summary.run_id = run_dir.run_id();
  summary.run_dir = run_dir.path();
  summary.final_model = parties_dir;
  summary.rounds_completed = result.rounds_completed;
  summary.final_metrics = result.final_metrics;
  summary.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // The share of the rounds' time the parties did not compute (passing
  // their tensors on, waiting): what splitting the model across silos costs
  // here, before any network.
  summary.overhead_fraction = result.round_seconds > 0
                                  ? std::max(0.0, 1.0 - result.party_seconds / result.round_seconds)
                                  : 0.0;
  summary.psi_intersection = result.alignment.intersection;
  summary.psi_parties = static_cast<int>(parties.size());
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.summary_path(), summary.ToJson() + "\n"));
  return summary;
}

}  // namespace fedsilo::cli
