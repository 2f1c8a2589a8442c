#include "cli/command.h"

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "cli/keys_command.h"
#include "core/allocator.h"

namespace fedsilo::cli {

void Commands::Add(CLI::App* app, Needs needs, std::function<Status()> run) {
  entries_.push_back({app, needs, std::move(run)});
}

void Commands::AddStorageKeysOption(CLI::App* app) {
  app->add_option("--storage-keys", storage_keys_,
                  "Storage key ring (YAML): encrypt models, checkpoints and ledgers at rest "
                  "(default: $FEDSILO_STORAGE_KEYS, or one key in $FEDSILO_STORAGE_KEY)");
}

const Commands::Entry* Commands::Parsed() const {
  const Entry* deepest = nullptr;
  int depth = -1;
  for (const Entry& e : entries_) {
    if (!e.app->parsed()) continue;
    int d = 0;
    for (const CLI::App* up = e.app->get_parent(); up != nullptr; up = up->get_parent()) ++d;
    if (d > depth) {
      deepest = &e;
      depth = d;
    }
  }
  return deepest;
}

Status Commands::RunParsed() const {
  const Entry* parsed = Parsed();
  if (parsed == nullptr) return absl::InvalidArgumentError("no command given; see --help");
  if (parsed->needs.model_memory) TuneAllocatorForModels();
  if (parsed->needs.storage_keys) {
    FEDSILO_RETURN_IF_ERROR(InstallStorageSealer(storage_keys_, parsed->needs.daemon));
    // Processes this one starts (run --processes) use the same ring.
    if (!storage_keys_.empty()) ::setenv("FEDSILO_STORAGE_KEYS", storage_keys_.c_str(), 1);
  }
  return parsed->run();
}

StatusOr<JobConfig> LoadJob(const std::string& path, const std::vector<std::string>& sets) {
  std::vector<ConfigOverride> overrides;
  for (const std::string& s : sets) {
    FEDSILO_ASSIGN_OR_RETURN(ConfigOverride o, ParseOverride(s));
    overrides.push_back(std::move(o));
  }
  return LoadJobConfig(path, overrides);
}

}  // namespace fedsilo::cli
