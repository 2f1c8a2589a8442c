// fedsilo: the command-line entry point. Argument parsing and wiring only.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "cli/audit_command.h"
#include "cli/export_command.h"
#include "cli/fraud_data.h"
#include "cli/keys_command.h"
#include "cli/module_command.h"
#include "cli/orchestrator_command.h"
#include "cli/predict_command.h"
#include "cli/privacy_command.h"
#include "cli/runs_command.h"
#include "cli/silo_command.h"
#include "cli/simulation.h"
#include "cli/ui_command.h"
#include "cli/user_commands.h"
#include "core/allocator.h"
#include "core/job_config.h"
#include "core/job_schema.h"
#include "core/version.h"
#include "core/status.h"
#include "core/unix_time.h"
#include "ml/sandbox.h"
#include "secure/provisioner.h"
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

StatusOr<std::vector<ConfigOverride>> ParseOverrides(const std::vector<std::string>& sets) {
  std::vector<ConfigOverride> overrides;
  for (const std::string& s : sets) {
    FEDSILO_ASSIGN_OR_RETURN(ConfigOverride o, ParseOverride(s));
    overrides.push_back(std::move(o));
  }
  return overrides;
}

StatusOr<JobConfig> LoadJob(const std::string& path, const std::vector<std::string>& sets) {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<ConfigOverride> overrides, ParseOverrides(sets));
  return LoadJobConfig(path, overrides);
}

// `fedsilo provision FEDERATION` when `add_kind` is kOrchestrator (no
// participant to add), else `fedsilo provision add-silo|add-user NAME`.
int Provision(const std::string& federation_path, const std::string& kits_dir,
              const std::string& participant, int days, secure::ParticipantKind add_kind) {
  const auto now = std::chrono::system_clock::now();
  if (add_kind != secure::ParticipantKind::kOrchestrator) {
    Status added = secure::AddParticipant(kits_dir, {participant, add_kind}, days, now);
    if (!added.ok()) return ReportError(added);
    std::printf("issued %s kit %s/%s (valid %d days); hand the folder to its owner\n",
                std::string(secure::ParticipantKindName(add_kind)).c_str(), kits_dir.c_str(),
                participant.c_str(), days);
    return kExitOk;
  }
  if (federation_path.empty()) {
    return ReportError(absl::InvalidArgumentError(
        "provision needs a federation file (or add-silo / add-user NAME); see --help"));
  }
  StatusOr<secure::FederationSpec> spec = secure::LoadFederationSpec(federation_path);
  if (!spec.ok()) return ReportError(spec.status());
  Status done = secure::ProvisionFederation(*spec, kits_dir, now);
  if (!done.ok()) return ReportError(done);
  std::printf("federation '%s': CA in %s/ca (keep ca.key private), kits:\n", spec->name.c_str(),
              kits_dir.c_str());
  std::printf("  %s/%s  (orchestrator; serves %s:%d)\n", kits_dir.c_str(),
              spec->orchestrator_name.c_str(), spec->orchestrator_hosts.front().c_str(),
              spec->orchestrator_port);
  for (const secure::ParticipantSpec& p : spec->participants) {
    std::printf("  %s/%s  (%s)\n", kits_dir.c_str(), p.name.c_str(),
                std::string(secure::ParticipantKindName(p.kind)).c_str());
  }
  std::printf("certificates valid %d days\n", spec->certificate_days);
  return kExitOk;
}

// `fedsilo provision revoke NAME`.
int RevokeKit(const std::string& kits_dir, const std::string& name) {
  const auto now = std::chrono::system_clock::now();
  if (Status s = secure::RevokeParticipant(kits_dir, name, now); !s.ok()) return ReportError(s);
  StatusOr<std::vector<secure::ParticipantRecord>> kits = secure::ListParticipants(kits_dir);
  if (!kits.ok()) return ReportError(kits.status());
  std::string serial;
  for (const secure::ParticipantRecord& r : *kits) {
    if (r.name == name) serial = r.serial;
  }
  std::printf(
      "revoked '%s' (serial %s): %s/ca/crl.pem now lists it, and each of the %zu kits here has "
      "a copy (crl.pem).\nCopy %s/ca/crl.pem into the kit folders of the orchestrator and the "
      "silos on other machines: they re-read it within seconds, refuse the certificate at the "
      "handshake and close its open stream.\n",
      name.c_str(), serial.c_str(), kits_dir.c_str(), kits->size(), kits_dir.c_str());
  return kExitOk;
}

// `fedsilo provision list`.
int ListKits(const std::string& kits_dir) {
  StatusOr<std::vector<secure::ParticipantRecord>> kits = secure::ListParticipants(kits_dir);
  if (!kits.ok()) return ReportError(kits.status());
  const auto now = std::chrono::system_clock::now();
  std::printf("%-20s %-13s %-34s %-11s %s\n", "NAME", "KIND", "SERIAL", "EXPIRES", "STATUS");
  for (const secure::ParticipantRecord& r : *kits) {
    const char* status = r.revoked ? "revoked" : now > r.not_after ? "expired" : "valid";
    std::printf("%-20s %-13s %-34s %-11s %s\n", r.name.c_str(),
                std::string(secure::ParticipantKindName(r.kind)).c_str(), r.serial.c_str(),
                UtcTime(r.not_after, true).c_str(), status);
  }
  return kExitOk;
}

// The names of `app`'s commands, joined.
std::string Commands(const CLI::App& app) {
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
           "; its commands: " + Commands(*at) + " (see " + path + " --help)";
  }
  if (!at->get_subcommands([](const CLI::App*) { return true; }).empty()) {
    return "'" + path + "' needs a command: " + Commands(*at) + " (see " + path + " --help)";
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

  std::string job_path;
  std::vector<std::string> sets;
  bool json = false;
  SimulationOptions sim;

  CLI::App* run = app.add_subcommand(
      "run",
      "Run a job in simulation: every silo in this process, each with a partition of the "
      "job's data set");
  run->add_option("job", job_path, "Job file (YAML)")->required();
  run->add_option("--set", sets,
                  "Override a job key by its dotted path, e.g. --set training.rounds=3 "
                  "(repeatable; the value is YAML)");
  run->add_flag("--json", json,
                "Print a one-line JSON summary as the last line of standard output");
  run->add_option("--workdir", sim.workdir,
                  "Folder that receives runs/<run_id>/ (default: current folder)");
  run->add_option("--threads", sim.threads,
                  "Silos trained at the same time (default: number of cores); results do not "
                  "depend on it")
      ->check(CLI::Range(1, 1024));
  run->add_option("--data-dir", sim.data_dir,
                  "Folder holding the data sets (default: $FEDSILO_DATA, else the source tree's "
                  "data/)");
  run->add_flag("--quiet", sim.quiet, "No per-round progress lines");
  run->add_option("--silo-policy", sim.silo_policy,
                  "Privacy policy (YAML) every silo applies; ledgers in <workdir>/silos/<name>/");
  run->add_option("--attack", sim.attack,
                  "Robustness experiments: the last --attackers silos send corrupted updates "
                  "(sign_flip: x -10; noise: Gaussian, 100x the update's RMS)");
  run->add_option("--attackers", sim.attackers, "How many silos --attack corrupts")
      ->check(CLI::Range(1, 10000));
  run->add_flag("--processes", sim.processes,
                "Run every silo as its own process, talking gRPC with mutual TLS to an "
                "orchestrator endpoint on 127.0.0.1 (a throwaway federation in the run dir)");

  std::string storage_keys;
  const char* storage_keys_help =
      "Storage key ring (YAML): encrypt models, checkpoints and ledgers at rest (default: "
      "$FEDSILO_STORAGE_KEYS, or one key in $FEDSILO_STORAGE_KEY)";
  run->add_option("--storage-keys", storage_keys, storage_keys_help);

  SiloCommandOptions silo_options;
  CLI::App* silo = app.add_subcommand(
      "silo", "Run a silo agent: connect out to the orchestrator and train on local data");
  silo->add_option("--kit", silo_options.kit_dir, "The silo's startup kit folder")->required();
  silo->add_option("--datasets", silo_options.datasets_path,
                   "Dataset catalog (YAML): names jobs use -> local data (required to run)");
  silo->add_option("--policy", silo_options.policy_path,
                   "Privacy policy (YAML): per dataset max_epsilon, delta, require_local_dp, "
                   "require_secure_aggregation, min_silos, max_evaluations_per_run, statistics, "
                   "share_train_metrics, export_metrics, allowed_models. A TorchScript module a "
                   "job ships runs only if allowed_models lists its sha256 (or the policy says "
                   "allow_any_module: true, for test federations); without a policy none does");
  silo->add_option("--state-dir", silo_options.state_dir,
                   "Folder for the privacy ledger (default: <kit>/state)");
  silo->add_option("--models-dir", silo_options.models_dir,
                   "Folder of TorchScript models (model.torchscript) this silo may load; without "
                   "it, jobs with one are refused");
  CLI::App* ledger = silo->add_subcommand("ledger", "Print the silo's privacy ledger");
  ledger->fallthrough();
  ledger->add_flag("--json", silo_options.json, "Print JSON");
  silo->add_option("--orchestrator", silo_options.orchestrator,
                   "host:port to dial (default: the kit's)");
  silo->add_option("--data-dir", silo_options.data_dir,
                   "Folder of the built-in data sets (default: $FEDSILO_DATA or data/)");
  silo->add_option("--storage-keys", storage_keys, storage_keys_help);
  silo->add_option("--audit-anchor-every", silo_options.audit_anchor_every,
                   "Send the audit log's signed head to the orchestrator at least every N "
                   "entries (also at connect and at each job's end; default 100)")
      ->check(CLI::Range(1, 1000000));
  silo->add_flag("--insecure", silo_options.insecure,
                 "Connect WITHOUT TLS (the orchestrator must run --insecure too); for debugging "
                 "networks only");

  OrchestratorCommandOptions orch_options;
  CLI::App* orch = app.add_subcommand(
      "orchestrator",
      "Run the orchestrator: serve silos and users (mutual TLS), queue and run jobs, keep them "
      "in a SQLite store");
  orch->add_option("--kit", orch_options.kit_dir, "The orchestrator's startup kit folder")
      ->required();
  orch->add_option("--state-dir", orch_options.state_dir,
                   "Folder for the job store and runs (default: <kit>/state)");
  orch->add_option("--listen", orch_options.listen,
                   "host:port to serve on (default: 0.0.0.0 and the kit's port; port 0 lets the "
                   "OS choose, see <state>/endpoint)");
  orch->add_option("--data-dir", orch_options.data_dir,
                   "Folder of the built-in data sets, for the held-out evaluation of the global "
                   "model (default: $FEDSILO_DATA or data/)");
  orch->add_option("--storage-keys", storage_keys, storage_keys_help);
  orch->add_option("--http", orch_options.http,
                   "host:port for the dashboard, its JSON API and Prometheus /metrics over HTTPS "
                   "(user certificates only); off when not given");
  orch->add_option("--lead", orch_options.leads,
                   "A user (certificate name) who may download every job's model besides the "
                   "user who submitted it (repeatable)");
  orch->add_option("--mlflow-allow", orch_options.mlflow_allow,
                   "An MLflow tracking server jobs may export to (tracking.mlflow.uri; "
                   "repeatable). The orchestrator's MLFLOW_* credentials go to these only; a job "
                   "naming another is refused at submit");
  orch->add_flag("--insecure", orch_options.insecure,
                 "Serve WITHOUT TLS; identities are claimed, not proven. For debugging networks "
                 "only");

  // The data scientist's commands, each with a user kit.
  UserOptions user;
  std::string job_id, reason, download_out;
  bool wait = false, follow = false;
  auto user_command = [&](const char* name, const char* help) {
    CLI::App* c = app.add_subcommand(name, help);
    c->add_option("--kit", user.kit_dir, "Your user kit folder")->required();
    c->add_option("--orchestrator", user.orchestrator, "host:port to dial (default: the kit's)");
    c->add_flag("--insecure", user.insecure,
                "Call WITHOUT TLS (only against an orchestrator run with --insecure)");
    c->add_flag("--json", user.json, "Print JSON (the last line of standard output)");
    return c;
  };
  CLI::App* submit = user_command("submit", "Queue a job on the orchestrator; prints its id");
  submit->add_option("job", job_path, "Job file (YAML)")->required();
  submit->add_option("--set", sets, "Override a job key, as for `run`");
  CLI::App* jobs = user_command("jobs", "List the orchestrator's jobs");
  CLI::App* status = user_command("status", "A job's state, rounds, silos and latest metrics");
  status->add_option("job_id", job_id, "Job id (from submit or jobs)")->required();
  status->add_flag("--wait", wait,
                   "Wait until the job has finished; exit status 1 unless it is done");
  CLI::App* logs = user_command("logs", "A job's events: rounds, dropped silos, errors");
  logs->add_option("job_id", job_id, "Job id")->required();
  logs->add_flag("--follow,-f", follow, "Keep printing new events until the job has finished");
  CLI::App* abort_job = user_command("abort", "Stop a queued or running job you submitted");
  abort_job->add_option("job_id", job_id, "Job id")->required();
  abort_job->add_option("--reason", reason, "Recorded in the job's log");
  CLI::App* download = user_command("download", "Fetch a finished job's final model (.fsm)");
  download->add_option("job_id", job_id, "Job id")->required();
  download->add_option("--out,-o", download_out, "Output file (default: <job_id>.fsm)");

  bool print_resolved = false, print_reference = false;
  CLI::App* validate =
      app.add_subcommand("validate", "Check a job file and report the first error");
  CLI::Option* validate_job = validate->add_option("job", job_path, "Job file (YAML)");
  validate->add_option("--set", sets, "Override a job key, as for `run`");
  validate->add_flag("--print", print_resolved,
                     "Print the resolved job (every key, defaults filled in)");
  validate
      ->add_flag("--reference", print_reference,
                 "Print every job key, its type, default, range and meaning (Markdown: "
                 "docs/job-reference.md)")
      ->excludes(validate_job);
  validate->callback([&] {
    if (!print_reference && validate_job->count() == 0) {
      throw CLI::RequiredError("job (or --reference)");
    }
  });

  std::string federation_path, kits_dir = "kits", participant;
  int days = 365;
  CLI::App* provision = app.add_subcommand(
      "provision",
      "Create the federation's certificate authority and a startup kit per participant");
  provision->add_option("federation", federation_path,
                        "Federation file (YAML): name, orchestrator hosts/port, participants");
  provision->add_option("--out", kits_dir, "Folder that receives ca/ and one kit per participant")
      ->capture_default_str();
  provision->require_subcommand(0, 1);
  CLI::App* add_silo = provision->add_subcommand(
      "add-silo", "Issue a kit for one more silo with the existing CA (nothing else changes)");
  CLI::App* add_user = provision->add_subcommand(
      "add-user", "Issue a kit for one more user (data scientist) with the existing CA");
  for (CLI::App* add : {add_silo, add_user}) {
    add->add_option("name", participant, "Participant name (letters, digits, -_.)")->required();
    add->add_option("--out", kits_dir, "Folder that holds ca/ and the kits")->capture_default_str();
    add->add_option("--days", days, "Certificate validity in days")
        ->check(CLI::Range(1, 36500))
        ->capture_default_str();
  }
  CLI::App* revoke = provision->add_subcommand(
      "revoke",
      "Revoke a participant's certificate: writes the CA's revocation list (ca/crl.pem) and a "
      "copy into every kit here; copy it to the kits on other machines");
  revoke->add_option("name", participant, "Participant whose certificate is revoked")->required();
  revoke->add_option("--out", kits_dir, "Folder that holds ca/ and the kits")
      ->capture_default_str();
  CLI::App* list_kits = provision->add_subcommand(
      "list", "Every participant with a kit here: kind, certificate serial, expiry, revoked");
  list_kits->add_option("--out", kits_dir, "Folder that holds ca/ and the kits")
      ->capture_default_str();

  PrivacyOptions privacy;
  CLI::App* privacy_cmd = app.add_subcommand(
      "privacy", "Differential privacy accounting (RDP of the sampled Gaussian mechanism)");
  privacy_cmd->require_subcommand(1);
  CLI::App* epsilon_cmd = privacy_cmd->add_subcommand(
      "epsilon", "The epsilon spent by DP-SGD / DP-FedAvg steps at a given delta");
  CLI::App* noise_cmd = privacy_cmd->add_subcommand(
      "noise", "The smallest noise multiplier that keeps epsilon within a target");
  for (CLI::App* c : {epsilon_cmd, noise_cmd}) {
    c->add_option("--sample-rate,-q", privacy.sample_rate,
                  "Probability that a record (or silo) takes part in a step")
        ->required();
    c->add_option("--steps", privacy.steps, "Number of noisy steps");
    c->add_option("--epochs", privacy.epochs,
                  "Instead of --steps: epochs; steps = epochs / sample rate, rounded down");
    c->add_option("--delta", privacy.delta, "Target delta")->capture_default_str();
    c->add_flag("--json", privacy.json, "Print a JSON object as the last line");
  }
  epsilon_cmd
      ->add_option("--noise-multiplier,-s", privacy.noise_multiplier,
                   "Noise standard deviation / clipping norm")
      ->required();
  noise_cmd->add_option("--target-epsilon,-e", privacy.target_epsilon, "Epsilon to stay within")
      ->required();

  CLI::App* keys =
      app.add_subcommand("keys",
                         "Storage key rings for encryption at rest: new, show, rotate, "
                         "seal-existing");
  keys->require_subcommand(1);
  std::string ring_path;
  std::vector<std::string> rotate_dirs;
  bool seal_plain = false, retire = false, force_seal = false;
  CLI::App* keys_new = keys->add_subcommand("new", "Create a key ring with one fresh key (0600)");
  keys_new->add_option("file", ring_path, "Key ring file to create")->required();
  CLI::App* keys_show = keys->add_subcommand("show", "List the key ids and the current one");
  keys_show->add_option("file", ring_path, "Key ring file")->required();
  keys_show->add_flag("--json", json, "Print JSON");
  CLI::App* keys_rotate = keys->add_subcommand(
      "rotate",
      "Add a fresh current key and re-encrypt every encrypted file under the folders with it "
      "(stop the processes that use the ring first)");
  keys_rotate->add_option("file", ring_path, "Key ring file")->required();
  keys_rotate->add_option("folders", rotate_dirs,
                          "Folders to re-encrypt (e.g. the orchestrator's or silo's state)");
  keys_rotate->add_flag("--seal-plain", seal_plain,
                        "Also encrypt plain model files (*.fsm) and privacy ledgers");
  keys_rotate->add_flag("--retire", retire,
                        "Then remove the old keys from the ring (files elsewhere still sealed "
                        "with them become unreadable)");
  keys_rotate->add_flag("--json", json, "Print JSON");
  const char* force_help =
      "Seal plain or older-format files even in a folder whose other files are sealed in the "
      "current format (such a file may have been put there to be sealed as genuine: check it)";
  keys_rotate->add_flag("--force", force_seal, force_help);
  CLI::App* keys_seal = keys->add_subcommand(
      "seal-existing",
      "Encrypt the plain files of folders started without a key ring (models, checkpoints, "
      "ledgers, summaries, job files, metrics), with the ring's current key");
  keys_seal->add_option("folders", rotate_dirs, "Folders to encrypt (run or state folders)")
      ->required();
  keys_seal->add_option("--storage-keys", storage_keys, storage_keys_help);
  keys_seal->add_flag("--json", json, "Print JSON");
  keys_seal->add_flag("--force", force_seal, force_help);

  CLI::App* audit = app.add_subcommand("audit", "Audit trails");
  audit->require_subcommand(1);
  AuditVerifyOptions audit_options;
  CLI::App* audit_verify = audit->add_subcommand(
      "verify", "Check an audit log's hash chain and report the first broken entry");
  audit_verify->add_option("log", audit_options.path, "The audit log (<state>/audit.log)")
      ->required();
  audit_verify->add_flag("--json", json, "Print JSON");
  audit_verify->add_option("--storage-keys", storage_keys, storage_keys_help);
  audit_verify->add_option("--anchor", audit_options.anchor,
                           "ENTRY:HASH printed by an earlier verify and kept elsewhere: also "
                           "check that the log still reaches it unchanged");
  audit_verify->add_option("--anchors", audit_options.anchors_file,
                           "A silo's signed audit heads as the orchestrator keeps them "
                           "(<state>/audit-anchors/SILO.jsonl): check the log against every one");
  audit_verify->add_option("--ca", audit_options.ca_file,
                           "The federation's CA certificate (ca.pem in any kit), to check the "
                           "anchors' signatures");

  CLI::App* runs = app.add_subcommand(
      "runs",
      "Runs recorded in a work folder's run store (or the orchestrator's, with --kit): list, "
      "show, compare, export");
  runs->require_subcommand(1);
  RunsOptions runs_options;
  std::string experiment, export_out;
  std::vector<std::string> run_names;
  bool csv = false;
  auto runs_command = [&](const char* name, const char* help) {
    CLI::App* c = runs->add_subcommand(name, help);
    CLI::Option* workdir =
        c->add_option("--workdir", runs_options.workdir,
                      "Work folder whose fedsilo.db to read (default: current folder)");
    c->add_option("--kit", runs_options.user.kit_dir,
                  "Your user kit folder: read the orchestrator's runs instead")
        ->excludes(workdir);
    c->add_option("--orchestrator", runs_options.user.orchestrator,
                  "host:port to dial with --kit (default: the kit's)");
    c->add_flag("--insecure", runs_options.user.insecure,
                "Call WITHOUT TLS (only against an orchestrator run with --insecure)");
    c->add_option("--storage-keys", storage_keys, storage_keys_help);
    return c;
  };
  CLI::App* runs_list = runs_command("list", "One line per run, oldest first");
  runs_list->add_option("--experiment", experiment, "Only the runs of this experiment");
  runs_list->add_flag("--json", runs_options.json, "Print JSON");
  CLI::App* runs_show =
      runs_command("show", "A run's silos, rounds with their global metrics, and events");
  runs_show->add_option("run", run_names, "Run id (or a unique prefix, or job id)")
      ->required()
      ->expected(1);
  runs_show->add_flag("--json", runs_options.json, "Print JSON");
  CLI::App* runs_compare =
      runs_command("compare", "Runs side by side: the job keys that differ, and the final metrics");
  runs_compare->add_option("runs", run_names, "Two or more runs")->required()->expected(2, -1);
  runs_compare->add_flag("--json", runs_options.json, "Print JSON");
  CLI::App* runs_export = runs_command("export", "Every metric of a run, one row per round (CSV)");
  runs_export->add_option("run", run_names, "Run id (or a unique prefix, or job id)")
      ->required()
      ->expected(1);
  runs_export->add_flag("--csv", csv, "CSV (the only format, and the default)");
  runs_export->add_option("--out,-o", export_out, "Output file (default: standard output)");

  ExportOptions export_options;
  std::string module_path;
  CLI::App* check_module = app.add_subcommand(
      "check-module",
      "Check a TorchScript module as a silo would (in a sandbox) and print its sha256 for a "
      "policy's allowed_models");
  check_module->add_option("file", module_path, "The module (.pt)")->required();
  check_module->add_flag("--json", json, "Print JSON");

  CLI::App* export_cmd = app.add_subcommand(
      "export", "Write a run's final model (or a kept checkpoint) as .fsm or TorchScript");
  export_cmd->add_option("run", export_options.run, "Run id (or a unique prefix, or job id)")
      ->required();
  export_cmd->add_option("--workdir", export_options.workdir,
                         "Work folder (or orchestrator state folder) holding the run "
                         "(default: current folder)");
  export_cmd
      ->add_option("--format", export_options.format,
                   "fsm or torchscript (default: torchscript for model.torchscript jobs)")
      ->check(CLI::IsMember({"fsm", "torchscript"}));
  export_cmd
      ->add_option("--round", export_options.round,
                   "A checkpointed round instead of the final model")
      ->check(CLI::PositiveNumber);
  export_cmd->add_option("--out,-o", export_options.out, "Output file")->required();
  export_cmd->add_flag("--json", export_options.json, "Print JSON");
  export_cmd->add_option("--storage-keys", storage_keys, storage_keys_help);

  PredictOptions predict_options;
  CLI::App* predict = app.add_subcommand(
      "predict",
      "Score the rows of a CSV file with a run's model, prepared as the silos prepared theirs");
  predict
      ->add_option("model", predict_options.model,
                   "Run id (or a unique prefix, or job id), or an .fsm file from "
                   "`fedsilo export --format fsm`")
      ->required();
  predict->add_option("--data", predict_options.data, "CSV file with a header")->required();
  predict->add_option("--out,-o", predict_options.out,
                      "Predictions CSV (default: standard output)");
  predict->add_option("--workdir", predict_options.workdir,
                      "Work folder (or orchestrator state folder) holding the run");
  predict
      ->add_option("--round", predict_options.round,
                   "A checkpointed round instead of the final model")
      ->check(CLI::PositiveNumber);
  predict->add_flag("--json", predict_options.json, "Print a JSON summary as the last line");
  predict->add_option("--storage-keys", storage_keys, storage_keys_help);

  FraudDataOptions fraud_options;
  CLI::App* generate = app.add_subcommand("generate", "Write example data sets");
  generate->require_subcommand(1);
  CLI::App* fraud = generate->add_subcommand(
      "fraud",
      "Synthetic card transactions, one CSV per region (east, west, south): imbalanced, "
      "with regional shifts and missing values");
  fraud->add_option("--out,-o", fraud_options.out, "Folder to write the CSV files to")->required();
  fraud->add_option("--seed", fraud_options.seed, "Random seed (default 7)");
  fraud->add_option("--scale", fraud_options.scale,
                    "Rows as a multiple of the defaults (3000, 2000, 1500)");
  fraud->add_flag("--json", fraud_options.json, "Print JSON");

  UiOptions ui_options;
  CLI::App* ui = app.add_subcommand(
      "ui", "Serve the dashboard of a work folder's runs (charts per round and silo, compare)");
  ui->add_option("--workdir", ui_options.workdir,
                 "Work folder whose fedsilo.db to show (default: current folder)");
  ui->add_option("--port", ui_options.port, "Port (default 8470; 0 = any free port)")
      ->check(CLI::Range(0, 65535));
  ui->add_option("--host", ui_options.host,
                 "Address to listen on (default 127.0.0.1; the dashboard has no login)");
  ui->add_option("--storage-keys", storage_keys, storage_keys_help);

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

  // Processes that send and receive models keep freed memory for the next
  // round. In-process simulation is left alone: one shared malloc arena slows
  // its parallel training by about a fifth.
  if (*silo || *orch || (*run && sim.processes)) TuneAllocatorForModels();

  // Encryption at rest: every command that writes or reads run or state files
  // takes the key ring the same way (--storage-keys, else the environment),
  // and it applies to every file read or written through core/file_seal.h.
  if (*run || *silo || *orch || *export_cmd || *predict || *ui || *runs || *audit) {
    if (Status sealed = InstallStorageSealer(storage_keys, (*silo && !*ledger) || *orch);
        !sealed.ok()) {
      return ReportError(sealed);
    }
    // Silo processes started by this one (run --processes) use the same ring.
    if (!storage_keys.empty()) ::setenv("FEDSILO_STORAGE_KEYS", storage_keys.c_str(), 1);
  }

  if (*check_module) {
    Status checked = CheckModuleCommand(module_path, json);
    return checked.ok() ? kExitOk : ReportError(checked);
  }
  if (*export_cmd) {
    Status ran = ExportCommand(export_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*predict) {
    Status ran = PredictCommand(predict_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*generate) {
    Status ran = GenerateFraudCommand(fraud_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*ui) {
    Status ran = UiCommand(ui_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*runs) {
    Status ran = *runs_list      ? RunsListCommand(runs_options, experiment)
                 : *runs_show    ? RunsShowCommand(runs_options, run_names.front())
                 : *runs_compare ? RunsCompareCommand(runs_options, run_names)
                                 : RunsExportCommand(runs_options, run_names.front(), export_out);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*audit) {
    audit_options.json = json;
    Status ran = AuditVerifyCommand(audit_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*keys) {
    Status ran = *keys_new    ? KeysNewCommand(ring_path)
                 : *keys_show ? KeysShowCommand(ring_path, json)
                 : *keys_seal ? KeysSealExistingCommand(storage_keys, rotate_dirs, force_seal, json)
                              : KeysRotateCommand(ring_path, rotate_dirs, seal_plain, force_seal,
                                                  retire, json);
    return ran.ok() ? kExitOk : ReportError(ran);
  }

  if (*silo) {
    Status ran = *ledger ? SiloLedgerCommand(silo_options) : RunSiloCommand(silo_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*privacy_cmd) {
    Status ran = *epsilon_cmd ? PrivacyEpsilonCommand(privacy) : PrivacyNoiseCommand(privacy);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*orch) {
    Status ran = RunOrchestratorCommand(orch_options);
    return ran.ok() ? kExitOk : ReportError(ran);
  }
  {
    Status ran = absl::OkStatus();
    bool user_ran = true;
    if (*submit) {
      StatusOr<JobConfig> job = LoadJob(job_path, sets);
      ran = job.ok() ? SubmitCommand(user, *job) : job.status();
    } else if (*jobs) {
      ran = JobsCommand(user);
    } else if (*status) {
      ran = StatusCommand(user, job_id, wait);
    } else if (*logs) {
      ran = LogsCommand(user, job_id, follow);
    } else if (*abort_job) {
      ran = AbortCommand(user, job_id, reason);
    } else if (*download) {
      ran = DownloadCommand(user, job_id, download_out);
    } else {
      user_ran = false;
    }
    if (user_ran) return ran.ok() ? kExitOk : ReportError(ran);
  }
  if (*revoke) return RevokeKit(kits_dir, participant);
  if (*list_kits) return ListKits(kits_dir);
  if (*provision)
    return Provision(federation_path, kits_dir, participant, days,
                     *add_silo   ? secure::ParticipantKind::kSilo
                     : *add_user ? secure::ParticipantKind::kUser
                                 : secure::ParticipantKind::kOrchestrator);

  if (*validate && print_reference) {
    std::printf("%s", JobReferenceMarkdown().c_str());
    return kExitOk;
  }
  StatusOr<JobConfig> job = LoadJob(job_path, sets);
  if (!job.ok()) return ReportError(job.status());

  if (*validate) {
    if (print_resolved) {
      std::printf("%s", JobConfigToYaml(*job).c_str());
    } else {
      std::printf("%s: valid (%s, %zu silos, %s, %d rounds)\n", job_path.c_str(),
                  job->data.dataset.c_str(), job->federation.silos.size(),
                  std::string(ModelKindName(job->model.kind)).c_str(), job->training.rounds);
    }
    return kExitOk;
  }

  // The run's own progress lines are its interface; session chatter from the
  // gRPC endpoint (with --processes) only matters when something goes wrong.
  spdlog::set_level(spdlog::level::warn);
  StatusOr<SimulationSummary> summary = RunSimulation(*job, sim);
  if (!summary.ok()) return ReportError(summary.status());
  const auto metric = [&](const char* name) {
    auto it = summary->final_metrics.find(name);
    return it == summary->final_metrics.end() ? 0.0 : it->second;
  };
  if (!sim.quiet) {
    std::printf("done: %d rounds in %.1fs; global test accuracy %.4f, loss %.4f",
                summary->rounds_completed, summary->wall_seconds, metric("accuracy"),
                metric("loss"));
    if (summary->overhead_fraction >= 0) {
      std::printf("; orchestration overhead %.1f%%", 100.0 * summary->overhead_fraction);
    }
    std::printf("\n");
    std::printf("  run dir      %s\n  final model  %s\n", summary->run_dir.c_str(),
                summary->final_model.c_str());
  }
  if (json) std::printf("%s\n", summary->ToJson().c_str());
  return kExitOk;
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
