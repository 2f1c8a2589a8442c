#include "cli/module_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "core/file_util.h"
#include "ml/sandbox.h"
#include "secure/audit_log.h"

namespace fedsilo::cli {

Status CheckModuleCommand(const std::string& path, bool json) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  const std::string digest = absl::StrCat("sha256:", secure::BytesDigest(bytes));
  // Loading a module runs its code: in a sandbox, never here.
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<ml::SandboxSession> session,
                           ml::SandboxSession::Start(ml::Sandbox::ThisProgram(), path));
  StatusOr<ml::SandboxSession::Loaded> loaded = session->Load(bytes, {}, 0);
  if (json) {
    nlohmann::json out = {{"file", path}, {"digest", digest}, {"passes", loaded.ok()}};
    if (loaded.ok()) {
      out["parameters"] = loaded->num_parameters;
      out["buffers"] = loaded->num_buffers;
    } else {
      out["reason"] = std::string(loaded.status().message());
    }
    std::printf("%s\n", out.dump().c_str());
  } else if (loaded.ok()) {
    std::printf(
        "%s: %s\n  passes the operation check (%lld parameters, %lld buffers; loaded in a "
        "sandbox)\n  to let a silo run it, list it in the dataset's policy: allowed_models: "
        "[%s]\n",
        path.c_str(), digest.c_str(), static_cast<long long>(loaded->num_parameters),
        static_cast<long long>(loaded->num_buffers), digest.c_str());
  }
  return loaded.ok() ? absl::OkStatus() : loaded.status();
}

void RegisterModuleCommand(CLI::App& app, Commands& commands) {
  struct Options {
    std::string path;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* check = app.add_subcommand(
      "check-module",
      "Check a TorchScript module as a silo would (in a sandbox) and print its sha256 for a "
      "policy's allowed_models");
  check->add_option("file", options->path, "The module (.pt)")->required();
  check->add_flag("--json", options->json, "Print JSON");
  commands.Add(check, kNoSetUp,
               [options] { return CheckModuleCommand(options->path, options->json); });
}

}  // namespace fedsilo::cli
