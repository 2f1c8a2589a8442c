#include "cli/silo_command.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/command.h"
#include "cli/stop_signals.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/job_config.h"
#include "ml/dataset_catalog.h"
#include "ml/sandbox.h"
#include "secure/audit_log.h"
#include "secure/provisioner.h"
#include "silo/privacy_guard.h"
#include "silo/silo_runtime.h"
#include "transport/silo_client.h"
#include "transport/tls.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo::cli {

namespace {

// Ties this silo to the process that started it (--exit-with-parent).
// Returns false when that process has ended already: the silo must not start.
bool TieToParent(const SiloCommandOptions& options) {
  if (options.exit_with_parent <= 0) return true;
  // SIGTERM stops the silo as a signal from its operator would. (The
  // kernel sends it when the thread that started this process ends: the
  // simulation starts its silos from its main thread.)
  ::prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
  if (::getppid() != options.exit_with_parent) {
    spdlog::warn("the process that started this silo (pid {}) has ended; not starting",
                 options.exit_with_parent);
    return false;
  }
  return true;
}

// The privacy policy and its ledger in `state`, with a word on what the
// policy allows.
StatusOr<std::unique_ptr<silo::PrivacyGuard>> OpenPrivacyGuard(const SiloCommandOptions& options,
                                                               const std::string& silo_name,
                                                               const std::string& state) {
  FEDSILO_ASSIGN_OR_RETURN(
      std::unique_ptr<silo::PrivacyGuard> guard,
      silo::PrivacyGuard::Open(options.policy_path, state + "/privacy-ledger.json"));
  if (guard->allow_any_module()) {
    spdlog::warn(
        "policy {}: allow_any_module: true. This silo runs ANY TorchScript module a job "
        "ships (still sandboxed and checked op by op). Use it only in a test federation.",
        options.policy_path);
  } else if (!options.policy_path.empty()) {
    for (const auto& [name, p] : guard->policy()) {
      if (!p.vertical.allow) continue;
      spdlog::info(
          "policy {}: dataset '{}' takes part in vertical jobs ({}; sets of at most {} "
          "ids blinded; {} people in common or more)",
          options.policy_path, name,
          p.vertical.columns.empty()
              ? std::string("every column of its catalog")
              : absl::StrCat("columns ", absl::StrJoin(p.vertical.columns, ", ")),
          p.vertical.max_peer_ids, p.vertical.min_intersection);
    }
  }
  if (options.policy_path.empty()) {
    spdlog::info(
        "silo '{}': no --policy: the default policy applies (no privacy budget; shipped "
        "TorchScript modules refused; statistics without minima and maxima; no vertical jobs)",
        silo_name);
  }
  return guard;
}

// Makes the state folder and opens its audit log, which `guard` and
// `runtime` then record to. The log must outlive both's use of it.
StatusOr<std::unique_ptr<secure::AuditLog>> OpenSiloAuditLog(const std::string& silo_name,
                                                             const std::string& state,
                                                             silo::PrivacyGuard* guard,
                                                             silo::SiloRuntime* runtime) {
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(state));
  if (OthersMayRead(state)) {
    spdlog::warn("state folder {} may be read by other users; make it private (chmod 700 {})",
                 state, state);
  }
  FEDSILO_ASSIGN_OR_RETURN(
      std::unique_ptr<secure::AuditLog> audit,
      secure::AuditLog::Open(state + "/audit.log", absl::StrCat("silo '", silo_name, "'")));
  // The ledger and the audit log must belong together: an older ledger put
  // back (to "refill" a budget), or the log cut back or removed, is caught.
  FEDSILO_RETURN_IF_ERROR(secure::CheckAgainstAuditLog(
      {state + "/privacy-ledger.json", guard->generation(), guard->audited_entries()}, *audit,
      "ledger_saved", "The silo will not run on it (budgets already spent would be spent again)"));
  guard->SetAuditTrail([log = audit.get()] { return log->entries(); },
                       [log = audit.get()](int64_t generation) {
                         log->Record("ledger_saved", {{"generation", std::to_string(generation)}});
                       });
  runtime->SetAuditLog(audit.get());
  runtime->SetStateDir(state);
  return audit;
}

// Where and how to connect, except for the audit log's head. `files` must
// outlive the options.
transport::SiloClientOptions ConnectionOptions(const SiloCommandOptions& options,
                                               const secure::Kit& kit,
                                               const transport::TlsFiles& files,
                                               const silo::SiloRuntime& runtime) {
  transport::SiloClientOptions client_options;
  client_options.target = options.orchestrator.empty()
                              ? absl::StrCat(kit.orchestrator_host, ":", kit.orchestrator_port)
                              : options.orchestrator;
  client_options.datasets = runtime.DatasetNames();
  if (options.insecure) {
    spdlog::warn(
        "--insecure: NO TLS. Updates travel in plaintext and the orchestrator is not "
        "verified. Use this only to debug a network, never with real data.");
    client_options.insecure_name = kit.name;
  }
  client_options.diagnose = [files = &files, target = client_options.target,
                             insecure = options.insecure] {
    return transport::DiagnoseConnection(target, *files, insecure, std::chrono::seconds(5));
  };
  return client_options;
}

// The audit log's head, signed with the kit's key, for the orchestrator to
// keep (docs/audit-trail.md): when connecting, when a job ends, and after a
// task once `every` entries were added since the last one. Every pointer
// must outlive the client; `anchored` (the entry last sent) is the session
// thread's only.
std::function<std::optional<v1::AuditHead>(bool)> AuditHeadSource(
    const secure::Kit* kit, const transport::TlsFiles* files, const secure::AuditLog* audit,
    const secure::MessageSigner* signer, int64_t* anchored, int every) {
  return
      [kit, files, audit, signer, anchored, every](bool requested) -> std::optional<v1::AuditHead> {
        const secure::AuditLog::Head now = audit->head();
        if (now.seq == 0 || (!requested && now.seq - *anchored < every)) return std::nullopt;
        secure::SignedAuditHead head;
        head.federation = kit->federation;
        head.participant = kit->name;
        head.head = {now.seq, now.hash};
        head.unix_millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
        head.certificate_pem = files->cert_pem;
        if (Status signed_head = secure::SignAuditHead(head, *signer); !signed_head.ok()) {
          spdlog::warn("audit log head not sent: {}", std::string(signed_head.message()));
          return std::nullopt;
        }
        *anchored = now.seq;
        v1::AuditHead m;
        m.set_entries(head.head.seq);
        m.set_hash(head.head.hash);
        m.set_unix_millis(head.unix_millis);
        m.set_certificate(head.certificate_pem);
        m.set_signature(head.signature);
        return m;
      };
}

// Runs `client` until a stop signal, or until it gives up (its error).
Status ServeUntilStopped(const secure::Kit& kit, const transport::SiloClientOptions& client_options,
                         transport::SiloClient* client) {
  StopSignals stop;  // before any thread starts

  spdlog::info("silo '{}' of federation '{}' connecting to {}; datasets: {}", kit.name,
               kit.federation, client_options.target, absl::StrJoin(client_options.datasets, ", "));
  // Run() returns by itself only when retrying cannot help (this kit is
  // refused); it then wakes the wait below as a signal would.
  Status gave_up;
  std::atomic<bool> ended{false};
  std::thread runner([&] {
    Status s = client->Run();
    if (!s.ok() && !ended.exchange(true)) {
      gave_up = std::move(s);
      kill(getpid(), SIGTERM);
    }
  });
  const int signal_number = stop.Wait();
  if (!ended.exchange(true)) {
    spdlog::info("silo '{}': signal {} received, leaving", kit.name, signal_number);
    client->Stop();
  }
  runner.join();
  return gave_up;
}

}  // namespace

Status RunSiloCommand(const SiloCommandOptions& options) {
  if (!TieToParent(options)) return absl::OkStatus();
  FEDSILO_ASSIGN_OR_RETURN(
      secure::Kit kit,
      secure::LoadKitOfKind(options.kit_dir, secure::ParticipantKind::kSilo, "`fedsilo silo`"));
  FEDSILO_ASSIGN_OR_RETURN(transport::TlsFiles files, transport::LoadCheckedTlsFiles(kit));
  if (options.datasets_path.empty()) {
    return absl::InvalidArgumentError("--datasets is required to run a silo");
  }
  FEDSILO_ASSIGN_OR_RETURN(silo::DatasetCatalog catalog,
                           silo::LoadDatasetCatalog(options.datasets_path, kit.name));
  const std::string state =
      options.state_dir.empty() ? options.kit_dir + "/state" : options.state_dir;
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<silo::PrivacyGuard> guard,
                           OpenPrivacyGuard(options, kit.name, state));
  silo::SiloRuntime runtime(kit.name, std::move(catalog),
                            options.data_dir.empty() ? ml::DefaultDataDir() : options.data_dir,
                            guard.get());
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<secure::AuditLog> audit,
                           OpenSiloAuditLog(kit.name, state, guard.get(), &runtime));
  // Other silos' certificates revoked by the operator are refused in secure
  // aggregation (the kit's crl.pem, re-read when it changes).
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<secure::RevocationList> revoked,
                           secure::RevocationList::Open(kit.crl_path, files.ca_pem));
  FEDSILO_ASSIGN_OR_RETURN(
      std::shared_ptr<const secure::SecAggIdentity> identity,
      secure::SecAggIdentity::Create(files.cert_pem, files.key_pem, files.ca_pem, revoked));
  runtime.SetSecAggIdentity(std::move(identity));
  if (!options.models_dir.empty()) runtime.SetModelsDir(options.models_dir);
  const ml::Sandbox sandbox = ml::Sandbox::ThisProgram();  // for every TorchScript module
  runtime.SetSandbox(&sandbox);

  transport::SiloClientOptions client_options = ConnectionOptions(options, kit, files, runtime);
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<secure::MessageSigner> head_signer,
                           secure::MessageSigner::Create(files.key_pem));
  int64_t anchored = 0;  // the entry last sent; the session thread's only
  client_options.audit_head = AuditHeadSource(&kit, &files, audit.get(), head_signer.get(),
                                              &anchored, options.audit_anchor_every);
  transport::SiloClient client(transport::ChannelCredentialsFor(files, options.insecure),
                               client_options, &runtime);
  return ServeUntilStopped(kit, client_options, &client);
}

Status SiloPredictionsCommand(const SiloCommandOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(secure::Kit kit,
                           secure::LoadKitOfKind(options.kit_dir, secure::ParticipantKind::kSilo,
                                                 "`fedsilo silo predictions`"));
  const std::string vertical =
      (options.state_dir.empty() ? options.kit_dir + "/state" : options.state_dir) + "/vertical";
  const std::string path = absl::StrCat(vertical, "/", options.run, "/predictions.csv");
  std::error_code ec;
  if (!IsValidRunId(options.run) || !std::filesystem::exists(path, ec)) {
    std::vector<std::string> kept;
    for (const auto& e : std::filesystem::directory_iterator(vertical, ec)) {
      if (std::filesystem::exists(e.path() / "predictions.csv", ec)) {
        kept.push_back(e.path().filename().string());
      }
    }
    std::sort(kept.begin(), kept.end());
    return absl::InvalidArgumentError(absl::StrCat(
        "silo '", kit.name, "' kept no predictions of run '", options.run, "' in ", vertical,
        kept.empty() ? " (it keeps those of the vertical jobs that predict, as their label owner)"
                     : absl::StrCat("; it kept those of: ", absl::StrJoin(kept, ", "))));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string csv, ReadProtectedFile(path));
  if (options.out.empty()) {
    std::fwrite(csv.data(), 1, csv.size(), stdout);
    return absl::OkStatus();
  }
  return WriteFileAtomically(options.out, csv);
}

Status SiloLedgerCommand(const SiloCommandOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(secure::Kit kit,
                           secure::LoadKitOfKind(options.kit_dir, secure::ParticipantKind::kSilo,
                                                 "`fedsilo silo ledger`"));
  const std::string state =
      options.state_dir.empty() ? options.kit_dir + "/state" : options.state_dir;
  FEDSILO_ASSIGN_OR_RETURN(
      std::unique_ptr<silo::PrivacyGuard> guard,
      silo::PrivacyGuard::Open(options.policy_path, state + "/privacy-ledger.json"));
  const std::vector<silo::LedgerEntry> entries = guard->Entries();
  // The datasets to total: those runs used, and those the policy names.
  std::set<std::string> datasets;
  for (const silo::LedgerEntry& e : entries) datasets.insert(e.dataset);
  for (const auto& [name, p] : guard->policy()) datasets.insert(name);
  if (options.json) {
    nlohmann::json all = nlohmann::json::array();
    for (const silo::LedgerEntry& e : entries) all.push_back(silo::LedgerEntryToJson(e));
    nlohmann::json totals = nlohmann::json::object();
    const auto number = [](double v) {
      return std::isinf(v) ? nlohmann::json() : nlohmann::json(v);
    };
    for (const std::string& d : datasets) {
      const silo::BudgetUse spent = guard->Use(d);
      const silo::BudgetUse reserved = guard->Use(d, /*reserved=*/true);
      const silo::DatasetPolicy& p = guard->PolicyFor(d);
      totals[d] = {{"epsilon", number(spent.epsilon)},
                   {"reserved_epsilon", number(reserved.epsilon)},
                   {"delta", reserved.delta},
                   {"composition", reserved.composition},
                   {"max_epsilon", p.max_epsilon > 0 ? nlohmann::json(p.max_epsilon) : nullptr},
                   {"budget_delta", p.delta}};
    }
    std::printf("%s\n", nlohmann::json({{"silo", kit.name}, {"entries", all}, {"datasets", totals}})
                            .dump()
                            .c_str());
    return absl::OkStatus();
  }
  std::printf("privacy ledger of silo '%s' (%s/privacy-ledger.json)\n", kit.name.c_str(),
              state.c_str());
  if (entries.empty()) std::printf("  no job has used this silo's data yet\n");
  const auto eps = [](double e) {
    return std::isinf(e) ? std::string("unbounded") : absl::StrFormat("%.4f", e);
  };
  for (const silo::LedgerEntry& e : entries) {
    const std::time_t t = static_cast<std::time_t>(e.last);
    char when[32];
    std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", std::localtime(&t));
    const std::string spent =
        !e.dp ? std::string("no DP")
              : absl::StrFormat("epsilon %s of %s planned (%lld of %lld steps)", eps(e.epsilon),
                                eps(e.planned_epsilon), static_cast<long long>(e.steps),
                                static_cast<long long>(e.planned_steps));
    std::printf("  %-14s %-40s %s, delta %g, %d evaluations, last %s\n", e.dataset.c_str(),
                e.run_id.c_str(), spent.c_str(), e.delta, e.evaluations, when);
  }
  for (const std::string& d : datasets) {
    const silo::BudgetUse spent = guard->Use(d);
    const silo::BudgetUse reserved = guard->Use(d, /*reserved=*/true);
    const silo::DatasetPolicy& p = guard->PolicyFor(d);
    const std::string budget = p.max_epsilon > 0 ? absl::StrFormat("of the budget %.4f at delta %g",
                                                                   p.max_epsilon, p.delta)
                                                 : std::string("(no budget set)");
    std::printf("  %s: spent epsilon %s, reserved %s by the runs' plans, %s; %s composition\n",
                d.c_str(), eps(spent.epsilon).c_str(), eps(reserved.epsilon).c_str(),
                budget.c_str(), reserved.composition.c_str());
  }
  return absl::OkStatus();
}

void RegisterSiloCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<SiloCommandOptions>();
  CLI::App* silo = app.add_subcommand(
      "silo", "Run a silo agent: connect out to the orchestrator and train on local data");
  silo->add_option("--kit", options->kit_dir, "The silo's startup kit folder")->required();
  silo->add_option("--datasets", options->datasets_path,
                   "Dataset catalog (YAML): names jobs use -> local data (required to run)");
  silo->add_option("--policy", options->policy_path,
                   "Privacy policy (YAML): per dataset max_epsilon, delta, require_local_dp, "
                   "require_secure_aggregation, min_silos, max_evaluations_per_run, statistics, "
                   "share_train_metrics, export_metrics, allowed_models, vertical. A TorchScript "
                   "module a job ships runs only if allowed_models lists its sha256 (or the policy "
                   "says allow_any_module: true, for test federations); without a policy none "
                   "does. A vertical job runs only on a dataset whose vertical.allow is true");
  silo->add_option("--state-dir", options->state_dir,
                   "Folder for the privacy ledger (default: <kit>/state)");
  silo->add_option("--models-dir", options->models_dir,
                   "Folder of TorchScript models (model.torchscript) this silo may load; without "
                   "it, jobs with one are refused");
  CLI::App* ledger = silo->add_subcommand("ledger", "Print the silo's privacy ledger");
  ledger->fallthrough();
  ledger->add_flag("--json", options->json, "Print JSON");
  silo->add_option("--orchestrator", options->orchestrator,
                   "host:port to dial (default: the kit's)");
  silo->add_option("--data-dir", options->data_dir,
                   "Folder of the built-in data sets (default: $FEDSILO_DATA or data/)");
  commands.AddStorageKeysOption(silo);
  silo->add_option("--audit-anchor-every", options->audit_anchor_every,
                   "Send the audit log's signed head to the orchestrator at least every N "
                   "entries (also at connect and at each job's end; default 100)")
      ->check(CLI::Range(1, 1000000));
  silo->add_option("--exit-with-parent", options->exit_with_parent,
                   "Stop when process PID ends (fedsilo run --processes starts its silos so)")
      ->group("");  // internal: not in --help
  silo->add_flag("--insecure", options->insecure,
                 "Connect WITHOUT TLS (the orchestrator must run --insecure too); for debugging "
                 "networks only");
  commands.Add(silo, kDaemon, [options] { return RunSiloCommand(*options); });
  commands.Add(ledger, kStateFiles, [options] { return SiloLedgerCommand(*options); });
  CLI::App* predictions = silo->add_subcommand(
      "predictions",
      "Print the predictions the silo kept as the label owner of a vertical job that predicted");
  predictions->fallthrough();
  predictions->add_option("run", options->run, "The job's run id (as the silo's log names it)")
      ->required();
  predictions->add_option("--out,-o", options->out, "CSV file to write (default: standard output)");
  commands.Add(predictions, kStateFiles, [options] { return SiloPredictionsCommand(*options); });
}

}  // namespace fedsilo::cli
