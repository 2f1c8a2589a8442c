#include "cli/local_federation.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"
#include "core/subprocess.h"
#include "secure/provisioner.h"
#include "transport/tls.h"

namespace fedsilo::cli {
namespace {

namespace fs = std::filesystem;

}  // namespace

StatusOr<std::unique_ptr<LocalFederation>> LocalFederation::Start(
    const JobConfig& job, const std::string& dir, const std::string& data_dir,
    std::chrono::seconds connect_timeout, const std::string& silo_policy,
    const std::string& ledger_root) {
  auto fed = std::unique_ptr<LocalFederation>(new LocalFederation());
  fed->silos_ = job.federation.silos;
  const std::string kits = dir + "/kits";
  secure::FederationSpec spec;
  spec.name = "local";
  spec.certificate_days = 2;
  spec.orchestrator_hosts = {"localhost", "127.0.0.1"};
  for (const std::string& s : job.federation.silos) {
    spec.participants.push_back({s, secure::ParticipantKind::kSilo});
  }
  // Throwaway: a resumed run's federation is provisioned afresh.
  std::error_code ec;
  std::filesystem::remove_all(kits, ec);
  FEDSILO_RETURN_IF_ERROR(
      secure::ProvisionFederation(spec, kits, std::chrono::system_clock::now()));
  // Built-in data: each silo takes its share. A catalog's data: each silo
  // reads the catalog, "{silo}" in its paths naming the silo's own file.
  std::string datasets = job.data.catalog;
  if (IsBuiltinDataset(job.data.dataset)) {
    datasets = kits + "/datasets.yaml";
    FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(
        datasets, absl::StrCat("datasets:\n  ", job.data.dataset, ": {builtin: ", job.data.dataset,
                               ", share: job}\n")));
  }

  FEDSILO_ASSIGN_OR_RETURN(secure::Kit kit, secure::LoadKit(kits + "/orchestrator"));
  FEDSILO_ASSIGN_OR_RETURN(transport::TlsFiles files, transport::LoadTlsFiles(kit));
  fed->ca_pem_ = files.ca_pem;
  fed->service_ = std::make_unique<transport::OrchestratorService>(
      files.ca_pem, &fed->registry_, [] { return std::chrono::system_clock::now(); });
  FEDSILO_ASSIGN_OR_RETURN(fed->server_, transport::GrpcServer::Start(
                                             "127.0.0.1:0", transport::MakeServerCredentials(files),
                                             {fed->service_.get()}));
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir + "/silos"));
  DataConfig catalogs;  // "{silo}" in its path: each silo's own
  catalogs.catalog = datasets;
  for (const std::string& s : job.federation.silos) {
    std::vector<std::string> args = {
        "fedsilo", "silo", "--kit", kits + "/" + s, "--datasets", SiloCatalog(catalogs, s),
        "--orchestrator", absl::StrCat("localhost:", fed->server_->port()), "--data-dir", data_dir,
        // Gone with this process, even when it is killed.
        "--exit-with-parent", std::to_string(::getpid())};
    if (!silo_policy.empty()) {
      args.insert(args.end(), {"--policy", silo_policy, "--state-dir", ledger_root + "/" + s});
    }
    if (job.model.kind == ModelKind::kTorchScript) {
      // The job's own module, on this machine.
      args.insert(args.end(),
                  {"--models-dir", fs::path(job.model.torchscript).parent_path().string()});
    }
    FEDSILO_ASSIGN_OR_RETURN(pid_t pid,
                             SpawnProcess("/proc/self/exe", args, dir + "/silos/" + s + ".log"));
    fed->children_.push_back(pid);
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + connect_timeout;
  auto next_report = start + std::chrono::seconds(5);
  for (;;) {
    std::vector<std::string> connected = fed->service_->ConnectedSilos();
    std::vector<std::string> missing;
    for (const std::string& s : fed->silos_) {
      if (std::find(connected.begin(), connected.end(), s) == connected.end()) missing.push_back(s);
    }
    if (missing.empty()) break;
    const auto now = std::chrono::steady_clock::now();
    if (now > deadline) {
      return absl::UnavailableError(
          absl::StrCat("silos did not connect within ", connect_timeout.count(),
                       " s (federation.wait_for_silos): ", absl::StrJoin(missing, ", "), " (see ",
                       dir, "/silos/<name>.log)"));
    }
    if (now > next_report) {  // a visible status while the job waits
      std::fprintf(stderr, "waiting for %zu of %zu silos to connect: %s\n", missing.size(),
                   fed->silos_.size(), absl::StrJoin(missing, ", ").c_str());
      next_report = now + std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return fed;
}

std::vector<std::unique_ptr<transport::SiloConnection>> LocalFederation::Connections(
    std::chrono::milliseconds round_timeout) {
  std::vector<std::unique_ptr<transport::SiloConnection>> out;
  for (const std::string& s : silos_) {
    out.push_back(
        std::make_unique<transport::RemoteSiloConnection>(s, service_.get(), round_timeout));
  }
  return out;
}

void LocalFederation::StopSilos() {
  for (pid_t pid : children_) kill(pid, SIGTERM);  // all leave at once
  for (pid_t pid : children_) StopProcess(pid, SIGTERM, std::chrono::seconds(2));
  children_.clear();
}

LocalFederation::~LocalFederation() {
  StopSilos();
  if (server_ != nullptr) server_->Shutdown();
}

}  // namespace fedsilo::cli
