#include "cli/keys_command.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "core/file_seal.h"
#include "orchestrator/job_store.h"
#include "secure/storage_keys.h"

namespace fedsilo::cli {

Status InstallStorageSealer(const std::string& flag_path, bool daemon) {
  StatusOr<std::optional<secure::KeyRing>> ring = secure::ConfiguredKeyRing(flag_path);
  if (!ring.ok()) return ring.status();
  if (!ring->has_value()) {
    if (daemon) {
      spdlog::warn(
          "files at rest are NOT encrypted: models, checkpoints and ledgers are written in the "
          "clear. Give a storage key ring with --storage-keys or {} (create one with "
          "`fedsilo keys new FILE`)",
          secure::kStorageKeysEnv);
    }
    SetFileSealer(nullptr);
    return absl::OkStatus();
  }
  const std::string current = (*ring)->current;
  SetFileSealer(std::make_shared<secure::AeadFileSealer>(std::move(**ring)));
  if (daemon) {
    spdlog::info("files at rest are encrypted (XChaCha20-Poly1305) with storage key '{}'", current);
  }
  return absl::OkStatus();
}

Status KeysNewCommand(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat(path, ": exists; refusing to replace a key ring (use keys rotate)"));
  }
  const secure::KeyRing ring = secure::NewKeyRing();
  FEDSILO_RETURN_IF_ERROR(secure::SaveKeyRing(ring, path));
  std::printf(
      "wrote %s (key '%s', mode 0600): keep it secret and backed up; files sealed with it "
      "cannot be read without it\n",
      path.c_str(), ring.current.c_str());
  return absl::OkStatus();
}

Status KeysShowCommand(const std::string& path, bool json) {
  FEDSILO_ASSIGN_OR_RETURN(secure::KeyRing ring, secure::LoadKeyRing(path));
  if (json) {
    nlohmann::json ids = nlohmann::json::array();
    for (const auto& [id, key] : ring.keys) ids.push_back(id);
    std::printf("%s\n", nlohmann::json({{"current", ring.current}, {"keys", ids}}).dump().c_str());
    return absl::OkStatus();
  }
  for (const auto& [id, key] : ring.keys) {
    std::printf("%s%s\n", id.c_str(), id == ring.current ? "  (current)" : "");
  }
  return absl::OkStatus();
}

namespace {

void PrintSealed(const secure::ReencryptStats& stats) {
  for (const std::string& f : stats.newly_sealed) std::printf("    encrypted %s\n", f.c_str());
}

// Re-seals the job stores (fedsilo.db) under `dir` with the ring's current
// key, each in one transaction; with `seal_plain`, encrypts plain ones.
// Returns each store with the number of values written.
StatusOr<std::vector<std::pair<std::string, int64_t>>> ResealStores(const std::string& dir,
                                                                    const secure::KeyRing& ring,
                                                                    bool seal_plain) {
  namespace fs = std::filesystem;
  std::vector<std::string> stores;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; it != end; it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
    if (it->is_regular_file(ec) && it->path().filename() == "fedsilo.db") {
      stores.push_back(it->path().string());
    }
  }
  std::sort(stores.begin(), stores.end());
  const auto sealer = std::make_shared<secure::AeadFileSealer>(ring);
  std::vector<std::pair<std::string, int64_t>> out;
  for (const std::string& store : stores) {
    FEDSILO_ASSIGN_OR_RETURN(int64_t values,
                             orchestrator::JobStore::Reseal(store, sealer, seal_plain));
    out.emplace_back(store, values);
  }
  return out;
}

void PrintStores(const std::vector<std::pair<std::string, int64_t>>& stores, const char* done) {
  for (const auto& [store, values] : stores) {
    if (values > 0) {
      std::printf("    store %s: %lld value(s) %s\n", store.c_str(), static_cast<long long>(values),
                  done);
    }
  }
}

nlohmann::json StoresJson(const std::vector<std::pair<std::string, int64_t>>& stores) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [store, values] : stores) out.push_back({{"store", store}, {"values", values}});
  return out;
}

}  // namespace

Status KeysRotateCommand(const std::string& path, const std::vector<std::string>& dirs,
                         bool seal_plain, bool force, bool retire, bool json) {
  FEDSILO_ASSIGN_OR_RETURN(secure::KeyRing ring, secure::LoadKeyRing(path));
  for (const std::string& dir : dirs) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
      return absl::NotFoundError(absl::StrCat(dir, ": no such folder"));
    }
  }
  const std::string old = ring.current;
  const std::string added = secure::AddKey(ring);
  // Saved first: whatever happens next, every file opens with this ring.
  FEDSILO_RETURN_IF_ERROR(secure::SaveKeyRing(ring, path));
  if (!json)
    std::printf("%s: new current key '%s' (was '%s')\n", path.c_str(), added.c_str(), old.c_str());
  nlohmann::json report = {{"key_ring", path}, {"current", added}, {"previous", old}};
  nlohmann::json folders = nlohmann::json::array();
  for (const std::string& dir : dirs) {
    const std::string context =
        absl::StrCat("re-encrypting ", dir, " (the key ring keeps both keys)");
    StatusOr<std::vector<std::pair<std::string, int64_t>>> stores =
        ResealStores(dir, ring, seal_plain);
    if (!stores.ok()) return Annotate(stores.status(), context);
    StatusOr<secure::ReencryptStats> stats = secure::ReencryptTree(dir, ring, seal_plain, force);
    if (!stats.ok()) return Annotate(stats.status(), context);
    folders.push_back({{"folder", dir},
                       {"reencrypted", stats->reencrypted},
                       {"already_current", stats->current},
                       {"plain", stats->plain},
                       {"newly_sealed", stats->newly_sealed},
                       {"stores", StoresJson(*stores)}});
    if (!json) {
      std::printf("  %s: %d file(s) re-encrypted, %d plain file(s) %s\n", dir.c_str(),
                  stats->reencrypted, stats->plain,
                  seal_plain ? "encrypted" : "left plain (--seal-plain encrypts them)");
      PrintSealed(*stats);
      PrintStores(*stores, "re-encrypted");
    }
  }
  report["folders"] = folders;
  if (retire) {
    const secure::Key32 key = ring.keys.at(added);
    ring.keys.clear();
    ring.keys[added] = key;
    FEDSILO_RETURN_IF_ERROR(secure::SaveKeyRing(ring, path));
    if (!json) {
      std::printf(
          "  old keys removed from %s: files elsewhere still sealed with them can no "
          "longer be read\n",
          path.c_str());
    }
  }
  report["retired"] = retire;
  if (json) std::printf("%s\n", report.dump().c_str());
  return absl::OkStatus();
}

Status KeysSealExistingCommand(const std::string& ring_flag, const std::vector<std::string>& dirs,
                               bool force, bool json) {
  FEDSILO_ASSIGN_OR_RETURN(std::optional<secure::KeyRing> ring,
                           secure::ConfiguredKeyRing(ring_flag));
  if (!ring.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("keys seal-existing: no storage key ring; give one with --storage-keys or ",
                     secure::kStorageKeysEnv, " (create one with `fedsilo keys new FILE`)"));
  }
  for (const std::string& dir : dirs) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
      return absl::NotFoundError(absl::StrCat(dir, ": no such folder"));
    }
  }
  nlohmann::json folders = nlohmann::json::array();
  for (const std::string& dir : dirs) {
    StatusOr<std::vector<std::pair<std::string, int64_t>>> stores = ResealStores(dir, *ring, true);
    if (!stores.ok()) return Annotate(stores.status(), absl::StrCat("encrypting ", dir));
    StatusOr<secure::ReencryptStats> stats = secure::ReencryptTree(dir, *ring, true, force);
    if (!stats.ok()) return Annotate(stats.status(), absl::StrCat("encrypting ", dir));
    folders.push_back({{"folder", dir},
                       {"encrypted", stats->reencrypted},
                       {"already_current", stats->current},
                       {"newly_sealed", stats->newly_sealed},
                       {"stores", StoresJson(*stores)}});
    if (!json) {
      std::printf("%s: %d file(s) encrypted with key '%s', %d already were\n", dir.c_str(),
                  stats->reencrypted, ring->current.c_str(), stats->current);
      PrintSealed(*stats);
      PrintStores(*stores, "encrypted");
    }
  }
  if (json) {
    std::printf("%s\n",
                nlohmann::json({{"current", ring->current}, {"folders", folders}}).dump().c_str());
  }
  return absl::OkStatus();
}

void RegisterKeysCommand(CLI::App& app, Commands& commands) {
  struct Options {
    std::string ring;
    std::vector<std::string> folders;
    bool seal_plain = false, retire = false, force = false, json = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* keys = app.add_subcommand(
      "keys", "Storage key rings for encryption at rest: new, show, rotate, seal-existing");
  keys->require_subcommand(1);
  CLI::App* create = keys->add_subcommand("new", "Create a key ring with one fresh key (0600)");
  create->add_option("file", options->ring, "Key ring file to create")->required();
  commands.Add(create, kNoSetUp, [options] { return KeysNewCommand(options->ring); });
  CLI::App* show = keys->add_subcommand("show", "List the key ids and the current one");
  show->add_option("file", options->ring, "Key ring file")->required();
  show->add_flag("--json", options->json, "Print JSON");
  commands.Add(show, kNoSetUp, [options] { return KeysShowCommand(options->ring, options->json); });
  const char* force_help =
      "Seal plain or older-format files even in a folder whose other files are sealed in the "
      "current format (such a file may have been put there to be sealed as genuine: check it)";
  CLI::App* rotate = keys->add_subcommand(
      "rotate",
      "Add a fresh current key and re-encrypt every encrypted file under the folders with it "
      "(stop the processes that use the ring first)");
  rotate->add_option("file", options->ring, "Key ring file")->required();
  rotate->add_option("folders", options->folders,
                     "Folders to re-encrypt (e.g. the orchestrator's or silo's state)");
  rotate->add_flag("--seal-plain", options->seal_plain,
                   "Also encrypt plain model files (*.fsm) and privacy ledgers");
  rotate->add_flag("--retire", options->retire,
                   "Then remove the old keys from the ring (files elsewhere still sealed with "
                   "them become unreadable)");
  rotate->add_flag("--json", options->json, "Print JSON");
  rotate->add_flag("--force", options->force, force_help);
  commands.Add(rotate, kNoSetUp, [options] {
    return KeysRotateCommand(options->ring, options->folders, options->seal_plain, options->force,
                             options->retire, options->json);
  });
  CLI::App* seal = keys->add_subcommand(
      "seal-existing",
      "Encrypt the plain files of folders started without a key ring (models, checkpoints, "
      "ledgers, summaries, job files, metrics), with the ring's current key");
  seal->add_option("folders", options->folders, "Folders to encrypt (run or state folders)")
      ->required();
  commands.AddStorageKeysOption(seal);
  seal->add_flag("--json", options->json, "Print JSON");
  seal->add_flag("--force", options->force, force_help);
  // The ring is this command's input, not a sealer for its own files.
  commands.Add(seal, kNoSetUp, [options, &commands] {
    return KeysSealExistingCommand(commands.storage_keys(), options->folders, options->force,
                                   options->json);
  });
}

}  // namespace fedsilo::cli
