#include "core/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace fedsilo {

StatusOr<pid_t> SpawnProcess(const std::string& program, const std::vector<std::string>& args,
                             const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!log_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", program, ": ", std::strerror(rc)));
  }
  return pid;
}

void StopProcess(pid_t pid, int signal, std::chrono::milliseconds grace) {
  kill(pid, signal);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (signal != SIGKILL && std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, nullptr, WNOHANG) != 0) return;  // reaped (or not our child)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (signal != SIGKILL) kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace fedsilo
