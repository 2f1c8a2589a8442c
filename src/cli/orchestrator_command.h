// `fedsilo orchestrator`: the federation's orchestrator daemon. Serves the
// silo endpoint and the users' job API on one port (mutual TLS), keeps jobs in
// a SQLite store in its state folder and runs them one at a time; runs until
// SIGINT/SIGTERM. A job interrupted by a stop or a crash resumes from its last
// completed round on the next start.
#ifndef FEDSILO_CLI_ORCHESTRATOR_COMMAND_H_
#define FEDSILO_CLI_ORCHESTRATOR_COMMAND_H_

#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo::cli {

struct OrchestratorCommandOptions {
  std::string kit_dir;
  std::string state_dir;  // empty = <kit>/state
  std::string listen;     // "host:port"; empty = 0.0.0.0 and the kit's port
  std::string data_dir;   // held-out test data; empty = the default data folder
  bool insecure = false;  // plaintext, identities claimed in metadata
  // "host:port" of the dashboard and /metrics (HTTPS, user certificates);
  // empty = none. Port 0 = any free port.
  std::string http;
  // MLflow servers jobs may export to (--mlflow-allow, repeatable).
  std::vector<std::string> mlflow_allow;
  // Users who may take every job's models (--lead, repeatable).
  std::vector<std::string> leads;
};

// Writes the address it serves on (with the port the OS chose for port 0) to
// <state>/endpoint. InvalidArgument for a kit that is not an orchestrator's;
// FailedPrecondition when another orchestrator holds the state folder.
Status RunOrchestratorCommand(const OrchestratorCommandOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_ORCHESTRATOR_COMMAND_H_
