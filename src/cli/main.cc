// fedsilo: the command-line entry point. Each command registers itself
// (cli/command.h); this file parses the command line, names mistakes, and
// runs the command parsed.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/command.h"
#include "core/job_config.h"
#include "core/status.h"
#include "core/version.h"
#include "ml/sandbox.h"
#include "transport/grpc_logging.h"

namespace fedsilo::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitInvalidInput = 2;

int ReportError(const Status& status) {
  // This process's own errors: with the details a silo keeps to itself.
  std::fprintf(stderr, "fedsilo: error: %s\n", FullMessage(status).c_str());
  return IsInvalidInput(status) ? kExitInvalidInput : kExitFailure;
}

// The names of `app`'s commands, joined.
std::string CommandNames(const CLI::App& app) {
  std::string joined;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    joined += (joined.empty() ? "" : ", ") + sub->get_name();
  }
  return joined;
}

// What CLI11 reports as "A subcommand is required" when the word after a
// command is not one of its commands -- most often a typo. Returns the error
// to print instead (naming the word, the commands there are, the nearest
// one), or "" when every command word was known.
std::string UnknownCommandError(const CLI::App& app, int argc, char** argv) {
  const CLI::App* at = &app;
  std::string path = "fedsilo";
  for (int i = 1; i < argc; ++i) {
    // Up to any '=': a mistyped --token=VALUE must not print its value.
    const std::string arg = argv[i];
    const std::string word = arg.substr(0, arg.find('='));
    if (word == "--") return "";
    std::vector<std::string> names;
    for (const CLI::App* sub : at->get_subcommands([](const CLI::App*) { return true; })) {
      names.push_back(sub->get_name());
    }
    if (names.empty()) return "";
    if (std::find(names.begin(), names.end(), word) != names.end()) {
      at = at->get_subcommand(word);
      path += " " + word;
      continue;
    }
    const bool option = word.rfind('-', 0) == 0;
    // A known option here (its value may follow): the word is no typo.
    if (option && (word == "-h" || word == "--help" || at->get_option_no_throw(word) != nullptr)) {
      return "";
    }
    std::string nearest;
    int distance = 3;  // suggest only what is at most two edits away
    for (const std::string& n : names) {
      if (const int d = EditDistance(word, n); d < distance) {
        distance = d;
        nearest = n;
      }
    }
    return std::string(option ? "unknown option '" : "unknown command '") + word + "' for '" +
           path + "'" + (nearest.empty() ? "" : " (did you mean '" + nearest + "'?)") +
           "; its commands: " + CommandNames(*at) + " (see " + path + " --help)";
  }
  if (!at->get_subcommands([](const CLI::App*) { return true; }).empty()) {
    return "'" + path + "' needs a command: " + CommandNames(*at) + " (see " + path + " --help)";
  }
  return "";
}

// For CLI11's "The following arguments were not expected": the first option
// the command given does not take, with the nearest one it does. "" when the
// unexpected words are not options (CLI11's message says it then).
std::string UnknownOptionError(const CLI::App& app, int argc, char** argv) {
  const CLI::App* at = &app;
  std::string path = "fedsilo";
  while (!at->get_subcommands().empty()) {
    at = at->get_subcommands().front();
    path += " " + at->get_name();
  }
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word == "--") break;  // what follows is not options
    if (word.rfind("--", 0) != 0) continue;
    const std::string name = word.substr(0, word.find('='));
    if (at->get_option_no_throw(name) != nullptr || name == "--help") continue;
    std::string nearest;
    int distance = 4;  // suggest only what is at most three edits away
    for (const CLI::Option* o : at->get_options()) {
      for (const std::string& long_name : o->get_lnames()) {
        if (const int d = EditDistance(name, "--" + long_name); d < distance) {
          distance = d;
          nearest = "--" + long_name;
        }
      }
    }
    return "unknown option '" + name + "' for '" + path + "'" +
           (nearest.empty() ? "" : " (did you mean '" + nearest + "'?)") + " (see " + path +
           " --help)";
  }
  return "";
}

int Main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("fedsilo");
  logger->set_pattern("fedsilo: %l: %v");
  spdlog::set_default_logger(logger);
  transport::RouteGrpcLogs(/*peer_addresses=*/false);  // servers turn them on

  CLI::App app{"fedsilo: federated learning across data silos"};
  app.set_version_flag("--version", FedsiloRelease());
  app.require_subcommand(1);
  Commands commands;
  RegisterRunCommand(app, commands);
  RegisterSiloCommand(app, commands);
  RegisterOrchestratorCommand(app, commands);
  RegisterUserCommands(app, commands);
  RegisterValidateCommand(app, commands);
  RegisterProvisionCommand(app, commands);
  RegisterPrivacyCommand(app, commands);
  RegisterKeysCommand(app, commands);
  RegisterAuditCommand(app, commands);
  RegisterRunsCommand(app, commands);
  RegisterModuleCommand(app, commands);
  RegisterExportCommand(app, commands);
  RegisterPredictCommand(app, commands);
  RegisterGenerateCommand(app, commands);
  RegisterUiCommand(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr &&
        std::string(e.what()).find("subcommand is required") != std::string::npos) {
      if (const std::string unknown = UnknownCommandError(app, argc, argv); !unknown.empty()) {
        std::fprintf(stderr, "fedsilo: error: %s\n", unknown.c_str());
        return kExitInvalidInput;
      }
    }
    if (dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr) {
      if (const std::string unknown = UnknownOptionError(app, argc, argv); !unknown.empty()) {
        std::fprintf(stderr, "fedsilo: error: %s\n", unknown.c_str());
        return kExitInvalidInput;
      }
    }
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitInvalidInput;
  }
  Status ran = commands.RunParsed();
  return ran.ok() ? kExitOk : ReportError(ran);
}

}  // namespace
}  // namespace fedsilo::cli

int main(int argc, char** argv) {
  // A TorchScript module's sandbox (ml/sandbox.h): this program again, with
  // nothing parsed, set up or opened.
  if (argc == 2 && std::strcmp(argv[1], "sandbox-worker") == 0) {
    return fedsilo::ml::RunSandboxWorker();
  }
  return fedsilo::cli::Main(argc, argv);
}
