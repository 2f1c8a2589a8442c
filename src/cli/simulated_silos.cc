#include "cli/simulated_silos.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "ml/dataset_catalog.h"
#include "transport/in_process_transport.h"

namespace fedsilo::cli {

StatusOr<transport::SiloHandler*> InProcessSilos::MakeSilo(const JobConfig& job, int index) {
  const std::string& name = job.federation.silos[index];
  // Each simulated silo applies a policy as a silo process would.
  FEDSILO_ASSIGN_OR_RETURN(
      auto opened, silo::PrivacyGuard::Open(
                       options_.silo_policy,
                       options_.silo_policy.empty()
                           ? std::string()
                           : absl::StrCat(options_.silos_dir, "/", name, "/privacy-ledger.json")));
  silo::PrivacyGuard* guard = opened.get();
  guards_.push_back(std::move(opened));
  if (IsBuiltinDataset(job.data.dataset)) {
    agents_.push_back(std::make_unique<silo::SiloAgent>(name, std::move(parts_[index]), busy_));
    agents_.back()->SetSandbox(sandbox_);
    agents_.back()->SetPrivacyGuard(guard, job.data.dataset);
    return agents_.back().get();
  }
  // Each silo reads its own file, as a silo process would.
  FEDSILO_ASSIGN_OR_RETURN(silo::DatasetCatalog catalog,
                           silo::LoadDatasetCatalog(SiloCatalog(job.data, name), name));
  runtimes_.push_back(
      std::make_unique<silo::SiloRuntime>(name, std::move(catalog), options_.data_dir, guard));
  runtimes_.back()->SetSandbox(sandbox_);
  if (job.model.kind == ModelKind::kTorchScript) {
    // The job's own module, on this machine (as --processes gives it).
    runtimes_.back()->SetModelsDir(
        std::filesystem::path(job.model.torchscript).parent_path().string());
  }
  return runtimes_.back().get();
}

StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> InProcessSilos::Connect(
    const JobConfig& job, const tracking::RunDirectory&) {
  const int num_silos = static_cast<int>(job.federation.silos.size());
  if (IsBuiltinDataset(job.data.dataset) && static_cast<int>(parts_.size()) != num_silos) {
    return absl::InternalError(
        absl::StrCat(parts_.size(), " data parts for ", num_silos, " simulated silos"));
  }
  std::vector<std::unique_ptr<transport::SiloConnection>> connections;
  for (int i = 0; i < num_silos; ++i) {
    FEDSILO_ASSIGN_OR_RETURN(transport::SiloHandler * handler, MakeSilo(job, i));
    if (attack_.has_value() && i >= num_silos - attackers_) {
      hostile_.push_back(std::make_unique<HostileSilo>(handler, *attack_, job.seed + i));
      handler = hostile_.back().get();
    }
    connections.push_back(
        std::make_unique<transport::InProcessConnection>(job.federation.silos[i], handler));
  }
  return connections;
}

StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> SiloProcesses::Connect(
    const JobConfig& job, const tracking::RunDirectory& run_dir) {
  FEDSILO_ASSIGN_OR_RETURN(
      federation_, LocalFederation::Start(job, run_dir.path(), options_.data_dir,
                                          std::chrono::seconds(job.federation.wait_for_silos),
                                          options_.silo_policy, options_.silos_dir));
  if (!options_.quiet) {
    std::printf("  silos   %d processes, gRPC + mutual TLS on 127.0.0.1:%d (logs in %s/silos)\n",
                static_cast<int>(job.federation.silos.size()), federation_->port(),
                run_dir.path().c_str());
    std::fflush(stdout);
  }
  return federation_->Connections(std::chrono::seconds(job.federation.round_timeout));
}

}  // namespace fedsilo::cli
