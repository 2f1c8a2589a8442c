// StopSignals: how the long-running commands (orchestrator, silo, ui) stop.
// Construct it before starting any thread: it blocks SIGINT and SIGTERM in
// the calling thread, and so in every thread started afterwards, so that only
// Wait() receives them. It also ignores SIGPIPE, so that a peer hanging up in
// the middle of a reply does not end the process.
#ifndef FEDSILO_CLI_STOP_SIGNALS_H_
#define FEDSILO_CLI_STOP_SIGNALS_H_

#include <signal.h>

namespace fedsilo::cli {

class StopSignals {
 public:
  StopSignals();
  // Blocks until SIGINT or SIGTERM arrives; returns its number.
  int Wait();

 private:
  sigset_t signals_;
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_STOP_SIGNALS_H_
