#include "cli/ui_command.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "cli/simulation.h"
#include "cli/stop_signals.h"
#include "orchestrator/dashboard.h"
#include "orchestrator/job_store.h"

namespace fedsilo::cli {

Status UiCommand(const UiOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(options.workdir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workdir ", options.workdir, ": no such folder"));
  }
  StopSignals stop;  // before the server's threads start

  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store,
                           orchestrator::JobStore::Open(RunStorePath(options.workdir)));
  orchestrator::DashboardOptions dashboard;
  dashboard.host = options.host;
  dashboard.port = options.port;
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::DashboardServer> server,
                           orchestrator::DashboardServer::Start(store.get(), dashboard));
  if (options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1") {
    spdlog::warn("the dashboard has no authentication; anyone who can reach {} sees every run",
                 options.host);
  }
  const std::string shown_host = options.host.find(':') != std::string::npos
                                     ? absl::StrCat("[", options.host, "]")
                                     : options.host;
  std::printf("fedsilo ui: http://%s:%d/  (runs of %s; Ctrl-C stops)\n", shown_host.c_str(),
              server->port(), store->path().c_str());
  std::fflush(stdout);
  stop.Wait();
  server->Stop();
  return absl::OkStatus();
}

}  // namespace fedsilo::cli
