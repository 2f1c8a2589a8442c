#include "cli/vertical_simulation.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/local_federation.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "ml/dataset_catalog.h"
#include "silo/dataset_catalog.h"
#include "silo/vertical_party.h"
#include "transport/vertical_wire.h"

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
  if (!options.attack.empty()) {
    return absl::InvalidArgumentError("--attack: not for vertical jobs in this release");
  }
  if (!options.silo_policy.empty() && !options.processes) {
    return absl::InvalidArgumentError(
        "--silo-policy: a vertical job's parties apply a policy as silo processes: add "
        "--processes");
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
  std::vector<std::unique_ptr<silo::VerticalPartyAgent>> parties;
  std::vector<transport::VerticalParty*> reach;
  // --processes: each party a `fedsilo silo` process of a throwaway
  // federation, reached over mutual TLS as in the real one.
  std::unique_ptr<LocalFederation> federation;
  std::vector<std::unique_ptr<transport::SiloConnection>> connections;
  std::vector<std::unique_ptr<transport::RemoteVerticalParty>> remote;
  const std::string silos_dir = options.workdir + "/silos";
  if (options.processes) {
    std::string policy = options.silo_policy;
    if (policy.empty()) {
      // The parties' data is the user's own here: they take part.
      FEDSILO_RETURN_IF_ERROR(MakePrivateDir(silos_dir));
      policy = silos_dir + "/vertical-policy.yaml";
      FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(policy, "defaults: {vertical: {allow: true}}\n"));
    }
    const std::string data_dir = options.data_dir.empty() ? ml::DefaultDataDir() : options.data_dir;
    FEDSILO_ASSIGN_OR_RETURN(
        federation, LocalFederation::Start(job, options.workdir, data_dir,
                                           std::chrono::seconds(job.federation.wait_for_silos),
                                           policy, silos_dir));
    connections = federation->Connections(std::chrono::seconds(job.federation.round_timeout));
    for (const auto& c : connections) {
      remote.push_back(
          std::make_unique<transport::RemoteVerticalParty>(c.get(), job, run.run_dir().run_id()));
      FEDSILO_RETURN_IF_ERROR(
          Annotate(remote.back()->Open(), absl::StrCat("party '", c->silo_name(), "'")));
      reach.push_back(remote.back().get());
    }
    if (!options.quiet) {
      std::printf(
          "fedsilo: run %s\n  data    %s: vertical, %zu parties as silo processes, "
          "label at %s\n",
          run.run_dir().run_id().c_str(), job.data.dataset.c_str(), reach.size(),
          job.vertical.label_owner.c_str());
      std::fflush(stdout);
    }
  } else {
    FEDSILO_ASSIGN_OR_RETURN(parties, MakeParties(job));
    if (!options.quiet) PrintHeader(job, run, parties);
    for (const auto& p : parties) reach.push_back(p.get());
  }
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
  // A silo process kept its own in its state folder.
  for (const std::string& name :
       options.processes ? job.federation.silos : std::vector<std::string>()) {
    const std::string kept = absl::StrCat(silos_dir, "/", name, "/vertical/", run_dir.run_id());
    const std::string dir = absl::StrCat(parties_dir, "/", name);
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(parties_dir));
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir));
    for (const char* file : {"bottom.fsm", "top.fsm"}) {
      if (name != job.vertical.label_owner && std::string(file) == "top.fsm") continue;
      FEDSILO_ASSIGN_OR_RETURN(ModelFile model, ReadModelStateFile(kept + "/" + file));
      FEDSILO_RETURN_IF_ERROR(WriteModelStateFile(dir + "/" + file, model.state, model.metadata));
    }
  }
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
  // (With --processes the parties' time as measured here includes the
  // transport: not reported, as for horizontal jobs.)
  summary.overhead_fraction = options.processes ? -1.0
                              : result.round_seconds > 0
                                  ? std::max(0.0, 1.0 - result.party_seconds / result.round_seconds)
                                  : 0.0;
  summary.psi_intersection = result.alignment.intersection;
  summary.psi_parties = static_cast<int>(reach.size());
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.summary_path(), summary.ToJson() + "\n"));
  return summary;
}

}  // namespace fedsilo::cli
