#include "cli/ui_command.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "cli/command.h"
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

void RegisterUiCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<UiOptions>();
  CLI::App* ui = app.add_subcommand(
      "ui", "Serve the dashboard of a work folder's runs (charts per round and silo, compare)");
  ui->add_option("--workdir", options->workdir,
                 "Work folder whose fedsilo.db to show (default: current folder)");
  ui->add_option("--port", options->port, "Port (default 8470; 0 = any free port)")
      ->check(CLI::Range(0, 65535));
  ui->add_option("--host", options->host,
                 "Address to listen on (default 127.0.0.1; the dashboard has no login)");
  commands.AddStorageKeysOption(ui);
  commands.Add(ui, kStateFiles, [options] { return UiCommand(*options); });
}

}  // namespace fedsilo::cli
