#include "cli/silo_command.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ml/dataset_catalog.h"
#include "secure/provisioner.h"
#include "silo/silo_runtime.h"
#include "transport/silo_client.h"
#include "transport/tls.h"

namespace fedsilo::cli {

Status RunSiloCommand(const SiloCommandOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(secure::Kit kit, secure::LoadKit(options.kit_dir));
  if (kit.kind != secure::ParticipantKind::kSilo) {
    return absl::InvalidArgumentError(absl::StrCat(options.kit_dir, ": this is a ",
                                                   secure::ParticipantKindName(kit.kind),
                                                   " kit; `fedsilo silo` needs a silo kit"));
  }
  FEDSILO_ASSIGN_OR_RETURN(transport::TlsFiles files, transport::LoadTlsFiles(kit));
  FEDSILO_ASSIGN_OR_RETURN(silo::DatasetCatalog catalog,
                           silo::LoadDatasetCatalog(options.datasets_path));
  silo::SiloRuntime runtime(kit.name, std::move(catalog),
                            options.data_dir.empty() ? ml::DefaultDataDir() : options.data_dir);

  transport::SiloClientOptions client_options;
  client_options.target = options.orchestrator.empty()
                              ? absl::StrCat(kit.orchestrator_host, ":", kit.orchestrator_port)
                              : options.orchestrator;
  client_options.datasets = runtime.DatasetNames();
  if (options.insecure) {
    spdlog::warn(
        "--insecure: NO TLS. Updates travel in plaintext and the orchestrator is not "
        "verified. Use this only to debug a network, never with real data.");
    client_options.insecure_name = kit.name;
  }
  transport::SiloClient client(transport::ChannelCredentialsFor(files, options.insecure),
                               client_options, &runtime);

  // Signals are taken by this thread only (sigwait), so block them first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  spdlog::info("silo '{}' of federation '{}' connecting to {}; datasets: {}", kit.name,
               kit.federation, client_options.target, absl::StrJoin(client_options.datasets, ", "));
  std::thread runner([&] { client.Run().IgnoreError(); });
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("silo '{}': signal {} received, leaving", kit.name, signal_number);
  client.Stop();
  runner.join();
  return absl::OkStatus();
}

}  // namespace fedsilo::cli
