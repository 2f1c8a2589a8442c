#include "cli/orchestrator_command.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "cli/held_out_evaluator.h"
#include "cli/stop_signals.h"
#include "core/file_lock.h"
#include "core/file_util.h"
#include "ml/dataset_catalog.h"
#include "ml/sandbox.h"
#include "orchestrator/audit_anchors.h"
#include "orchestrator/dashboard.h"
#include "orchestrator/job_manager.h"
#include "orchestrator/job_store.h"
#include "orchestrator/jobs_service.h"
#include "orchestrator/metrics.h"
#include "orchestrator/silo_registry.h"
#include "secure/audit_log.h"
#include "secure/provisioner.h"
#include "transport/orchestrator_service.h"
#include "transport/tls.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo::cli {

namespace {

// Makes the state folder (private); warns when others may read it anyway.
Status MakeStateDir(const std::string& state_dir) {
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(state_dir));
  if (OthersMayRead(state_dir)) {
    spdlog::warn("state folder {} may be read by other users; make it private (chmod 700 {})",
                 state_dir, state_dir);
  }
  return absl::OkStatus();
}

// Opens the state folder's audit log, which `store` and `manager` then
// record to.
StatusOr<std::unique_ptr<secure::AuditLog>> OpenOrchestratorAuditLog(
    const std::string& name, const std::string& state_dir, orchestrator::JobStore* store,
    orchestrator::JobManager* manager) {
  FEDSILO_ASSIGN_OR_RETURN(
      std::unique_ptr<secure::AuditLog> audit,
      secure::AuditLog::Open(state_dir + "/audit.log", absl::StrCat("orchestrator '", name, "'")));
  // The store and the audit log vouch for each other: an older copy of the
  // store put back, or the log cut back or removed, is caught here.
  FEDSILO_RETURN_IF_ERROR(
      secure::CheckAgainstAuditLog({store->path(), store->generation(), store->audited_entries()},
                                   *audit, "store_saved", "The orchestrator will not start on it"));
  store->SetAuditTrail([log = audit.get()] { return log->entries(); },
                       [log = audit.get()](int64_t generation) {
                         log->Record("store_saved", {{"generation", std::to_string(generation)}});
                       });
  manager->SetAuditLog(audit.get());
  return audit;
}

// The silos' signed audit log heads, kept where their operators cannot
// take them back. `silo_service` hands them over once checked.
StatusOr<std::unique_ptr<orchestrator::AuditAnchors>> KeepAuditAnchors(
    const std::string& state_dir, const transport::TlsFiles& files,
    const std::shared_ptr<secure::RevocationList>& revoked, secure::AuditLog* audit,
    transport::OrchestratorService* silo_service) {
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::AuditAnchors> anchors,
                           orchestrator::AuditAnchors::Open(state_dir + "/audit-anchors", audit));
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<secure::SignatureChecker> checker,
                           secure::SignatureChecker::Create(files.ca_pem, revoked));
  silo_service->SetAuditHeadSink(
      std::move(checker),
      [keep = anchors.get()](const secure::SignedAuditHead& head) { keep->Record(head); });
  return anchors;
}

// Serves `services` on --listen (default: the kit's port) and says where:
// on stdout, then in <state>/endpoint.
StatusOr<std::unique_ptr<transport::GrpcServer>> StartGrpcServer(
    const OrchestratorCommandOptions& options, const secure::Kit& kit, const std::string& state_dir,
    const transport::TlsFiles& files, const std::shared_ptr<secure::RevocationList>& revoked,
    const std::vector<grpc::Service*>& services) {
  const std::string listen =
      options.listen.empty() ? absl::StrCat("0.0.0.0:", kit.orchestrator_port) : options.listen;
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<transport::GrpcServer> server,
                           transport::GrpcServer::Start(
                               listen,
                               options.insecure ? grpc::InsecureServerCredentials()
                                                : transport::MakeServerCredentials(files, revoked),
                               services));
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string endpoint = absl::StrCat(host, ":", server->port());
  std::printf("fedsilo orchestrator '%s' of federation '%s' serving on %s (%s)\n", kit.name.c_str(),
              kit.federation.c_str(), endpoint.c_str(),
              options.insecure ? "PLAINTEXT, --insecure" : "mutual TLS");
  std::printf("  state  %s (jobs in fedsilo.db, runs in runs/, audit trail in audit.log)\n",
              state_dir.c_str());
  std::fflush(stdout);
  // The endpoint file says "ready": whoever waits for it finds the lines
  // above already written.
  FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(state_dir + "/endpoint", endpoint + "\n"));
  return server;
}

// The dashboard's host and port, from --http.
StatusOr<orchestrator::DashboardOptions> DashboardAddress(const std::string& http) {
  const size_t colon = http.rfind(':');
  int http_port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(http.substr(colon + 1), &http_port) ||
      http_port < 0 || http_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http ", http, ": expected host:port, e.g. 0.0.0.0:8471"));
  }
  orchestrator::DashboardOptions address;
  address.host = http.substr(0, colon);
  address.port = http_port;
  return address;
}

// The /metrics body. Every pointer must outlive the dashboard.
std::function<std::string()> MetricsPage(orchestrator::OrchestratorMetrics* metrics,
                                         const orchestrator::SiloRegistry* registry,
                                         const transport::OrchestratorService* silo_service,
                                         const orchestrator::JobStore* jobs) {
  return [metrics, registry, silo_service, jobs] {
    orchestrator::OrchestratorMetrics::Snapshot now;
    for (const auto& s : registry->Snapshot()) now.silos_connected += s.connected ? 1 : 0;
    now.bytes_sent = silo_service->BytesSent();
    now.bytes_received = silo_service->BytesReceived();
    StatusOr<std::vector<orchestrator::JobRecord>> all = jobs->ListJobs();
    if (all.ok()) {
      for (const auto& j : *all) ++now.jobs_by_state[std::string(JobStateName(j.state))];
    }
    return metrics->Render(now);
  };
}

// Serves the dashboard on --http (not empty) and says where: on stdout,
// then in <state>/http_endpoint. `files` and `jobs` must outlive it.
StatusOr<std::unique_ptr<orchestrator::DashboardServer>> StartDashboard(
    const OrchestratorCommandOptions& options, const std::string& state_dir,
    const transport::TlsFiles& files, const std::shared_ptr<secure::RevocationList>& revoked,
    const std::function<std::chrono::system_clock::time_point()>& clock,
    orchestrator::JobStore* jobs, std::function<std::string()> metrics_page) {
  std::unique_ptr<orchestrator::DashboardServer> dashboard;
  FEDSILO_ASSIGN_OR_RETURN(orchestrator::DashboardOptions http, DashboardAddress(options.http));
  http.tls = options.insecure ? nullptr : &files;
  http.revoked = revoked;
  http.clock = clock;
  http.metrics = std::move(metrics_page);
  FEDSILO_ASSIGN_OR_RETURN(dashboard, orchestrator::DashboardServer::Start(jobs, http));
  const std::string http_endpoint = absl::StrCat(http.host, ":", dashboard->port());
  std::printf("  web    %s://%s/ (dashboard, JSON API, /metrics; %s)\n",
              options.insecure ? "http" : "https", http_endpoint.c_str(),
              options.insecure ? "PLAINTEXT, no login" : "user certificates only");
  std::fflush(stdout);
  FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(state_dir + "/http_endpoint", http_endpoint + "\n"));
  return dashboard;
}

// Runs jobs until SIGINT or SIGTERM, then stops serving. `dashboard` may be
// null.
void ServeUntilStopped(StopSignals* stop, orchestrator::JobManager* manager,
                       orchestrator::DashboardServer* dashboard, transport::GrpcServer* server,
                       orchestrator::JobStore* store) {
  manager->Start();
  const int signal_number = stop->Wait();
  spdlog::info("signal {} received; stopping (a running job resumes at the next start)",
               signal_number);
  manager->Stop();
  if (dashboard != nullptr) dashboard->Stop();
  server->Shutdown();
  store->SetAuditTrail(nullptr, nullptr);  // the log goes first
}

}  // namespace

Status RunOrchestratorCommand(const OrchestratorCommandOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(
      secure::Kit kit,
      secure::LoadKitOfKind(options.kit_dir, secure::ParticipantKind::kOrchestrator,
                            "`fedsilo orchestrator`"));
  // An expired certificate would start a daemon that every silo's and
  // user's handshake refuses: caught here, naming the kit, before anything
  // is made.
  FEDSILO_ASSIGN_OR_RETURN(transport::TlsFiles files, transport::LoadCheckedTlsFiles(kit));
  const std::string state_dir =
      options.state_dir.empty() ? options.kit_dir + "/state" : options.state_dir;
  FEDSILO_RETURN_IF_ERROR(MakeStateDir(state_dir));
  // Held for the daemon's lifetime: two orchestrators never share one store.
  FEDSILO_ASSIGN_OR_RETURN(
      FileLock lock,
      FileLock::Acquire(state_dir + "/lock", state_dir + " is in use by another orchestrator"));
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store,
                           orchestrator::JobStore::Open(state_dir + "/fedsilo.db"));

  if (options.insecure) {
    spdlog::warn(
        "--insecure: NO TLS. Traffic is plaintext and any caller can claim any silo or user "
        "name. Use this only to debug a network, never with real data.");
  }
  const auto clock = [] { return std::chrono::system_clock::now(); };
  // The operator's revocations (`fedsilo provision revoke`), re-read when the
  // kit's crl.pem changes.
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<secure::RevocationList> revoked,
                           secure::RevocationList::Open(kit.crl_path, files.ca_pem));
  if (revoked->size() > 0) {
    spdlog::info("{}: {} revoked certificate(s) refused", kit.crl_path, revoked->size());
  }
  orchestrator::SiloRegistry registry;
  transport::OrchestratorService silo_service(files.ca_pem, &registry, clock, options.insecure);
  silo_service.SetRevocationList(revoked);
  // A job's TorchScript module is checked and run only in sandboxed workers.
  BuiltinJobPreparer preparer(options.data_dir.empty() ? ml::DefaultDataDir() : options.data_dir,
                              ml::Sandbox::ThisProgram());
  orchestrator::JobManager manager(state_dir, store.get(), &silo_service, &registry, &preparer);
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<secure::AuditLog> audit,
                           OpenOrchestratorAuditLog(kit.name, state_dir, store.get(), &manager));
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::AuditAnchors> anchors,
                           KeepAuditAnchors(state_dir, files, revoked, audit.get(), &silo_service));
  manager.SetFederationCa(files.ca_pem);
  orchestrator::OrchestratorMetrics metrics;
  manager.SetMetrics(&metrics);
  manager.SetMlflowAllowlist(options.mlflow_allow);
  manager.SetLeads(options.leads);
  orchestrator::JobsService jobs_service(&manager,
                                         {files.ca_pem, clock, options.insecure, revoked});

  StopSignals stop;  // before gRPC starts its threads

  FEDSILO_ASSIGN_OR_RETURN(
      std::unique_ptr<transport::GrpcServer> server,
      StartGrpcServer(options, kit, state_dir, files, revoked, {&silo_service, &jobs_service}));
  std::unique_ptr<orchestrator::DashboardServer> dashboard;
  if (!options.http.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(
        dashboard, StartDashboard(options, state_dir, files, revoked, clock, store.get(),
                                  MetricsPage(&metrics, &registry, &silo_service, store.get())));
  }
  ServeUntilStopped(&stop, &manager, dashboard.get(), server.get(), store.get());
  return absl::OkStatus();
}

void RegisterOrchestratorCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<OrchestratorCommandOptions>();
  CLI::App* orch = app.add_subcommand(
      "orchestrator",
      "Run the orchestrator: serve silos and users (mutual TLS), queue and run jobs, keep them "
      "in a SQLite store");
  orch->add_option("--kit", options->kit_dir, "The orchestrator's startup kit folder")->required();
  orch->add_option("--state-dir", options->state_dir,
                   "Folder for the job store and runs (default: <kit>/state)");
  orch->add_option("--listen", options->listen,
                   "host:port to serve on (default: 0.0.0.0 and the kit's port; port 0 lets the "
                   "OS choose, see <state>/endpoint)");
  orch->add_option("--data-dir", options->data_dir,
                   "Folder of the built-in data sets, for the held-out evaluation of the global "
                   "model (default: $FEDSILO_DATA or data/)");
  commands.AddStorageKeysOption(orch);
  orch->add_option("--http", options->http,
                   "host:port for the dashboard, its JSON API and Prometheus /metrics over HTTPS "
                   "(user certificates only); off when not given");
  orch->add_option("--lead", options->leads,
                   "A user (certificate name) who may download every job's model besides the "
                   "user who submitted it (repeatable)");
  orch->add_option("--mlflow-allow", options->mlflow_allow,
                   "An MLflow tracking server jobs may export to (tracking.mlflow.uri; "
                   "repeatable). The orchestrator's MLFLOW_* credentials go to these only; a job "
                   "naming another is refused at submit");
  orch->add_flag("--insecure", options->insecure,
                 "Serve WITHOUT TLS; identities are claimed, not proven. For debugging networks "
                 "only");
  commands.Add(orch, kDaemon, [options] { return RunOrchestratorCommand(*options); });
}

}  // namespace fedsilo::cli
