// The data scientist's commands against a running orchestrator, each with a
// user kit: submit, jobs, status, logs, abort, download. Output is for people;
// with `json` the last line of standard output is one JSON object.
#ifndef FEDSILO_CLI_USER_COMMANDS_H_
#define FEDSILO_CLI_USER_COMMANDS_H_

#include <string>
#include <vector>

#include "cli/user_options.h"
#include "core/job_config.h"
#include "core/status.h"

namespace fedsilo::cli {

// Queues `job` (already loaded and checked, as `fedsilo validate` does) and
// prints its id on standard output.
Status SubmitCommand(const UserOptions& options, const JobConfig& job);
Status JobsCommand(const UserOptions& options);
// With `wait`, polls until the job has finished; a job that failed or was
// aborted is then an error.
Status StatusCommand(const UserOptions& options, const std::string& job_id, bool wait);
// With `follow`, keeps printing new entries until the job has finished.
Status LogsCommand(const UserOptions& options, const std::string& job_id, bool follow);
Status AbortCommand(const UserOptions& options, const std::string& job_id,
                    const std::string& reason);
// Writes the final model to `out` (default <job_id>.fsm) after checking it.
Status DownloadCommand(const UserOptions& options, const std::string& job_id,
                       const std::string& out);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_USER_COMMANDS_H_
