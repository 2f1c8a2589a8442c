// Starting and stopping child processes (silo agents on one machine).
#ifndef FEDSILO_CORE_SUBPROCESS_H_
#define FEDSILO_CORE_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo {

// Starts `program` with `args` (args[0] is the name the child sees) and this
// process's environment. Its standard output and error are appended to
// `log_path`, or inherited when it is empty. Internal error when it cannot start.
StatusOr<pid_t> SpawnProcess(const std::string& program, const std::vector<std::string>& args,
                             const std::string& log_path);

// Sends `signal` and, unless it was SIGKILL, waits up to `grace` for the
// child to leave before killing it; always reaps it.
void StopProcess(pid_t pid, int signal, std::chrono::milliseconds grace);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_SUBPROCESS_H_
