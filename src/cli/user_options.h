// How the user commands reach the orchestrator: a user kit, and what to
// override of it.
#ifndef FEDSILO_CLI_USER_OPTIONS_H_
#define FEDSILO_CLI_USER_OPTIONS_H_

#include <string>

namespace fedsilo::cli {

struct UserOptions {
  std::string kit_dir;
  std::string orchestrator;  // "host:port"; empty = the kit's
  bool insecure = false;
  bool json = false;
  int timeout_seconds = 30;  // deadline of each call
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_USER_OPTIONS_H_
