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

// Where a run of `workdir` keeps its parties' parts.
std::string PartiesDir(const std::string& workdir, const std::string& run_id) {
  return absl::StrCat(workdir, "/runs/", run_id, "/parties");
}

// The files of a party's part (KeepPart), or of the label owner's
// predictions, copied from `from` to `to` (re-sealed as this process
// seals).
Status CopyKept(const std::string& from, const std::string& to, bool predictions) {
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(std::filesystem::path(to).parent_path().string()));
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(to));
  if (predictions) {
    FEDSILO_ASSIGN_OR_RETURN(std::string csv, ReadProtectedFile(from + "/predictions.csv"));
    return WriteProtectedFile(to + "/predictions.csv", csv);
  }
  for (const char* file : {"bottom.fsm", "statistics.fsm", "top.fsm"}) {
    std::error_code ec;
    if (!std::filesystem::exists(absl::StrCat(from, "/", file), ec)) continue;
    FEDSILO_ASSIGN_OR_RETURN(ModelFile model, ReadModelStateFile(absl::StrCat(from, "/", file)));
    FEDSILO_RETURN_IF_ERROR(
        WriteModelStateFile(absl::StrCat(to, "/", file), model.state, model.metadata));
  }
  // The TorchScript module a bottom model came from.
  std::error_code ec;
  if (std::filesystem::exists(from + "/bottom.pt", ec)) {
    FEDSILO_ASSIGN_OR_RETURN(std::string module, ReadProtectedFile(from + "/bottom.pt"));
    FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(to + "/bottom.pt", module));
  }
  return absl::OkStatus();
}

// Each party as its silo would make it: from its own catalog's entry (and,
// predicting, its part of that run of `workdir`).
StatusOr<std::vector<std::unique_ptr<silo::VerticalPartyAgent>>> MakeParties(
    const JobConfig& job, const std::string& workdir) {
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
    silo::VerticalPartyOptions options;
    // A TorchScript module runs in a sandbox, as at a silo.
    options.sandbox = ml::Sandbox::ThisProgram();
    if (job.model.kind == ModelKind::kTorchScript && job.vertical.predict_with.empty()) {
      FEDSILO_ASSIGN_OR_RETURN(std::string module, ReadFileOpeningSealed(job.model.torchscript));
      options.module = std::make_shared<const std::string>(std::move(module));
    }
    if (const std::string& with = job.vertical.predict_with; !with.empty()) {
      FEDSILO_ASSIGN_OR_RETURN(
          silo::KeptPart kept,
          silo::ReadKeptPart(absl::StrCat(PartiesDir(workdir, with), "/", name), name, with));
      options.kept = std::make_shared<const silo::KeptPart>(std::move(kept));
    }
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<silo::VerticalPartyAgent> party,
                             silo::VerticalPartyAgent::Create(name, job, entry->second, options));
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
  std::string bottom = "linear";
  if (job.model.kind == ModelKind::kTorchScript) {
    bottom = absl::StrCat("the party's submodule of ",
                          std::filesystem::path(job.model.torchscript).filename().string(),
                          " (sandboxed)");
  } else if (job.model.kind == ModelKind::kMlp && !job.model.hidden.empty()) {
    bottom = absl::StrCat("mlp [", absl::StrJoin(job.model.hidden, ", "), "]");
  }
  std::printf(
      "  model   split: bottom %s to %d at each party, top %s\n", bottom.c_str(),
      job.vertical.cut_width,
      job.vertical.top_hidden.empty()
          ? "linear"
          : absl::StrCat("mlp [", absl::StrJoin(job.vertical.top_hidden, ", "), "]").c_str());
  if (!job.vertical.predict_with.empty()) {
    std::printf("  predict with run %s: every aligned row scored once\n",
                job.vertical.predict_with.c_str());
  } else {
    std::printf("  rounds  %d (each %d pass%s over the aligned training rows)\n",
                job.training.rounds, job.training.local_epochs,
                job.training.local_epochs == 1 ? "" : "es");
  }
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
  if (const std::string& with = job.vertical.predict_with; !with.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(PartiesDir(options.workdir, with), ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("vertical.predict_with: ", options.workdir, "/runs has no vertical run '",
                       with, "' whose parties kept their parts (`fedsilo runs list`)"));
    }
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
    if (const std::string& with = job.vertical.predict_with; !with.empty()) {
      // Each silo predicts with its own part, kept in its state folder.
      for (const std::string& name : job.federation.silos) {
        FEDSILO_RETURN_IF_ERROR(CopyKept(absl::StrCat(PartiesDir(options.workdir, with), "/", name),
                                         absl::StrCat(silos_dir, "/", name, "/vertical/", with),
                                         false));
      }
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
    FEDSILO_ASSIGN_OR_RETURN(parties, MakeParties(job, options.workdir));
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
  // Each party keeps its own part (or, predicting, the label owner its
  // predictions), as its silo would.
  const tracking::RunDirectory& run_dir = run.run_dir();
  const std::string parties_dir = run_dir.path() + "/parties";
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(parties_dir));
  const bool scoring = !job.vertical.predict_with.empty();
  // A silo process kept its own in its state folder.
  for (const std::string& name :
       options.processes ? job.federation.silos : std::vector<std::string>()) {
    if (scoring && name != job.vertical.label_owner) continue;
    FEDSILO_RETURN_IF_ERROR(
        CopyKept(absl::StrCat(silos_dir, "/", name, "/vertical/", run_dir.run_id()),
                 absl::StrCat(parties_dir, "/", name), scoring));
  }
  for (const auto& p : parties) {
    const std::string dir = absl::StrCat(parties_dir, "/", p->name());
    if (scoring && !p->label_owner()) continue;
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir));
    FEDSILO_RETURN_IF_ERROR(scoring
                                ? WriteProtectedFile(dir + "/predictions.csv", p->PredictionsCsv())
                                : silo::KeepPart(dir, run_dir.run_id(), *p));
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
  if (scoring) {
    summary.predictions =
        absl::StrCat(parties_dir, "/", job.vertical.label_owner, "/predictions.csv");
  }
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir.summary_path(), summary.ToJson() + "\n"));
  return summary;
}

}  // namespace fedsilo::cli
