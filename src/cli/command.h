// The fedsilo binary's commands. Each command's file registers its
// subcommand, its options and what it runs (the Register...Commands functions
// below); the registry then does, for the command parsed, the set-up that
// cuts across commands -- the storage key ring for encryption at rest, malloc
// tuning for processes that move models -- as the command says it needs. A
// new command states its needs; it cannot forget the set-up.
#ifndef FEDSILO_CLI_COMMAND_H_
#define FEDSILO_CLI_COMMAND_H_

#include <functional>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace fedsilo::cli {

// What a command needs set up before it runs.
struct Needs {
  // It reads or writes run or state files: the key ring (--storage-keys, as
  // AddStorageKeysOption adds it, else the environment) seals them.
  bool storage_keys = false;
  // A daemon of the real federation: it warns loudly when no key ring is
  // configured.
  bool daemon = false;
  // It sends and receives models: freed memory is kept for the next round
  // (core/allocator.h).
  bool model_memory = false;
};
// Commands that touch no run or state file.
inline constexpr Needs kNoSetUp{};
// Commands that read or write run or state files.
inline constexpr Needs kStateFiles{/*storage_keys=*/true, /*daemon=*/false,
                                   /*model_memory=*/false};
// The real federation's long-running processes.
inline constexpr Needs kDaemon{/*storage_keys=*/true, /*daemon=*/true, /*model_memory=*/true};

class Commands {
 public:
  // `run` runs when `app` is the command parsed (the deepest one, for a
  // command with commands of its own).
  void Add(CLI::App* app, Needs needs, std::function<Status()> run);

  // Adds --storage-keys to `app`.
  void AddStorageKeysOption(CLI::App* app);
  // Its value, once parsed ("" when not given).
  const std::string& storage_keys() const { return storage_keys_; }

  // Sets up what the parsed command needs, then runs it.
  Status RunParsed() const;

 private:
  struct Entry {
    CLI::App* app;
    Needs needs;
    std::function<Status()> run;
  };
  const Entry* Parsed() const;

  std::vector<Entry> entries_;
  std::string storage_keys_;  // --storage-keys of the parsed command
};

// Each command file's registration, in the order `fedsilo --help` lists them.
void RegisterRunCommand(CLI::App& app, Commands& commands);           // run_command.cc
void RegisterSiloCommand(CLI::App& app, Commands& commands);          // silo_command.cc
void RegisterOrchestratorCommand(CLI::App& app, Commands& commands);  // orchestrator_command.cc
void RegisterUserCommands(CLI::App& app, Commands& commands);         // user_commands.cc
void RegisterValidateCommand(CLI::App& app, Commands& commands);      // validate_command.cc
void RegisterProvisionCommand(CLI::App& app, Commands& commands);     // provision_command.cc
void RegisterPrivacyCommand(CLI::App& app, Commands& commands);       // privacy_command.cc
void RegisterKeysCommand(CLI::App& app, Commands& commands);          // keys_command.cc
void RegisterAuditCommand(CLI::App& app, Commands& commands);         // audit_command.cc
void RegisterRunsCommand(CLI::App& app, Commands& commands);          // runs_command.cc
void RegisterModuleCommand(CLI::App& app, Commands& commands);        // module_command.cc
void RegisterExportCommand(CLI::App& app, Commands& commands);        // export_command.cc
void RegisterPredictCommand(CLI::App& app, Commands& commands);       // predict_command.cc
void RegisterGenerateCommand(CLI::App& app, Commands& commands);      // fraud_data.cc
void RegisterUiCommand(CLI::App& app, Commands& commands);            // ui_command.cc

// The job file at `path` with each "key=value" of `sets` applied (--set).
StatusOr<JobConfig> LoadJob(const std::string& path, const std::vector<std::string>& sets);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_COMMAND_H_
