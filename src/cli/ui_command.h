// `fedsilo ui`: the dashboard for a work folder's runs (see
// orchestrator/dashboard.h), until SIGINT or SIGTERM.
#ifndef FEDSILO_CLI_UI_COMMAND_H_
#define FEDSILO_CLI_UI_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

struct UiOptions {
  std::string workdir = ".";
  std::string host = "127.0.0.1";
  int port = 8470;  // 0 = any free port
};

// Prints "fedsilo ui: http://HOST:PORT/ ..." once it is listening.
Status UiCommand(const UiOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_UI_COMMAND_H_
