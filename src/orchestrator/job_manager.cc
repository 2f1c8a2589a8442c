#include "orchestrator/job_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/mutex.h"
#include "transport/vertical_wire.h"

namespace fedsilo::orchestrator {
namespace {

// The federation's silos, reached through the gRPC endpoint once they have
// connected (`wait`).
class ConnectedSilos : public SiloReach {
 public:
  ConnectedSilos(transport::OrchestratorService* service, std::string ca_pem,
                 std::function<Status(const JobConfig&)> wait)
      : service_(service), ca_pem_(std::move(ca_pem)), wait_(std::move(wait)) {}

  StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> Connect(
      const JobConfig& job, const tracking::RunDirectory&) override {
    FEDSILO_RETURN_IF_ERROR(wait_(job));
    std::vector<std::unique_ptr<transport::SiloConnection>> connections;
    for (const std::string& s : job.federation.silos) {
      connections.push_back(std::make_unique<transport::RemoteSiloConnection>(
          s, service_, std::chrono::seconds(job.federation.round_timeout)));
    }
    return connections;
  }
  std::string federation_ca_pem() const override { return ca_pem_; }

 private:
  transport::OrchestratorService* service_;
  std::string ca_pem_;
  std::function<Status(const JobConfig&)> wait_;
};

// Prepares a job with its shipped module's file here in place of its name.
class ShippedModulePreparer : public JobPreparer {
 public:
  ShippedModulePreparer(const JobManager* manager, JobPreparer* inner)
      : manager_(manager), inner_(inner) {}
  StatusOr<PreparedJob> Prepare(const JobConfig& job) override {
    FEDSILO_ASSIGN_OR_RETURN(JobConfig local, manager_->ResolveModule(job));
    return inner_->Prepare(local);
  }

 private:
  const JobManager* manager_;
  JobPreparer* inner_;
};

}  // namespace

JobManager::JobManager(std::string state_dir, JobStore* store,
                       transport::OrchestratorService* service, SiloRegistry* registry,
                       JobPreparer* preparer)
    : state_dir_(std::move(state_dir)),
      store_(store),
      service_(service),
      registry_(registry),
      preparer_(preparer) {}

JobManager::~JobManager() { Stop(); }

Status JobManager::CheckMlflow(const JobConfig& job) const {
  const std::string& uri = job.tracking.mlflow.uri;
  if (uri.empty()) return absl::OkStatus();
  const auto bare = [](std::string u) {
    while (!u.empty() && u.back() == '/') u.pop_back();
    return u;
  };
  for (const std::string& allowed : mlflow_allowed_) {
    if (bare(allowed) == bare(uri)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tracking.mlflow.uri: '", uri, "' is not a tracking server this orchestrator exports to (",
      mlflow_allowed_.empty() ? std::string("its operator allows none")
                              : absl::StrCat("it allows ", absl::StrJoin(mlflow_allowed_, ", ")),
      "; --mlflow-allow)"));
}

void JobManager::Start() {
  worker_ = std::thread([this] { WorkerLoop(); });
}

void JobManager::Stop() {
  std::string run;
  {
    MutexLock lock(&mu_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    run = current_run_;
  }
  stop_run_ = true;
  cv_.SignalAll();
  if (!run.empty()) service_->CancelRun(run, "the orchestrator is shutting down");
  if (worker_.joinable()) worker_.join();
}

bool JobManager::Stopping() const {
  MutexLock lock(&mu_);
  return stopping_;
}

void JobManager::Event(const std::string& job_id, const std::string& level,
                       const std::string& message) {
  if (level == "error" || level == "warn") {
    spdlog::warn("{}: {}", job_id, message);
  } else {
    spdlog::info("{}: {}", job_id, message);
  }
  Status s = store_->AddEvent(job_id, level, message);
  if (!s.ok()) spdlog::error("{}", std::string(s.message()));
}

StatusOr<JobConfig> JobManager::ResolveModule(const JobConfig& job) const {
  JobConfig local = job;
  if (job.model.kind != ModelKind::kTorchScript) return local;
  StatusOr<std::string> digest = ShippedModuleDigest(job.model.torchscript);
  if (!digest.ok()) return Annotate(digest.status(), "model.torchscript");
  if (digest->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.torchscript: '", job.model.torchscript, "' is not a shipped module"));
  }
  local.model.torchscript = ShippedModulePath(state_dir_ + "/models", *digest);
  return local;
}

StatusOr<JobRecord> JobManager::Submit(const std::string& owner, const std::string& job_yaml,
                                       const std::string& torchscript) {
  FEDSILO_ASSIGN_OR_RETURN(JobConfig job, ParseJobConfig(job_yaml, "submitted job"));
  FEDSILO_RETURN_IF_ERROR(CheckMlflow(job));
  if (job.model.kind == ModelKind::kTorchScript) {
    // The job's path names a file on the submitter's machine: the module
    // itself comes with the job, and is known by its digest from here on.
    if (torchscript.empty()) {
      return absl::InvalidArgumentError(
          "model.torchscript: the job came without its module (fedsilo submit sends it)");
    }
    const std::string digest = secure::BytesDigest(torchscript);
    job.model.torchscript = absl::StrCat(kShippedModulePrefix, digest);
    const std::string path = ShippedModulePath(state_dir_ + "/models", digest);
    std::error_code ec;
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(state_dir_ + "/models"));
    if (!std::filesystem::exists(path, ec)) {
      FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(path, torchscript));
    }
    // The orchestrator evaluates it too: it must load, and fit the data
    // (for the silos' own data, known only once the statistics are in).
    if (IsBuiltinDataset(job.data.dataset)) {
      FEDSILO_ASSIGN_OR_RETURN(JobConfig local, ResolveModule(job));
      FEDSILO_RETURN_IF_ERROR(preparer_->Prepare(local).status());
    }
  } else if (!torchscript.empty()) {
    return absl::InvalidArgumentError(
        "a TorchScript module came with a job that has no model.torchscript");
  }
  JobRecord record;
  record.name = job.name;
  record.owner = owner;
  record.job_yaml = JobConfigToYaml(job);
  record.rounds_total = job.training.rounds;
  record.experiment = job.experiment;
  FEDSILO_ASSIGN_OR_RETURN(record, store_->CreateJob(std::move(record)));
  FEDSILO_RETURN_IF_ERROR(store_->AddSilos(record.id, job.federation.silos));
  if (audit_ != nullptr) {
    audit_->Record("job_submitted", {{"job", record.id},
                                     {"user", owner},
                                     {"name", job.name},
                                     {"job_digest", secure::BytesDigest(record.job_yaml)},
                                     {"torchscript", job.model.torchscript}});
  }
  Event(record.id, "info",
        absl::StrCat("submitted by ", owner, ": ", job.name, ", ", job.training.rounds,
                     " rounds on ", job.federation.silos.size(), " silos (",
                     absl::StrJoin(job.federation.silos, ", "), ")"));
  cv_.SignalAll();
  return record;
}

StatusOr<JobRecord> JobManager::Abort(const std::string& id, const std::string& user,
                                      const std::string& reason) {
  std::string cancel_run;
  {
    MutexLock lock(&mu_);
    FEDSILO_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(id));
    if (record.owner != user) {
      return absl::PermissionDeniedError(absl::StrCat("job ", id, " belongs to '", record.owner,
                                                      "'; only its owner may abort it"));
    }
    if (IsFinished(record.state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " has already finished (", JobStateName(record.state), ")"));
    }
    const std::string why = absl::StrCat("aborted by ", user, reason.empty() ? "" : ": ", reason);
    FEDSILO_RETURN_IF_ERROR(store_->RequestAbort(id, why));
    if (audit_ != nullptr) {
      audit_->Record("job_abort_requested", {{"job", id}, {"user", user}, {"reason", reason}});
    }
    if (current_job_ == id) {
      abort_current_ = true;
      stop_run_ = true;
      cancel_run = current_run_;
      Event(id, "warn", absl::StrCat(why, "; stopping"));
    } else {
      FEDSILO_RETURN_IF_ERROR(store_->SetState(id, JobState::kAborted, why));
      Event(id, "warn", why);
    }
  }
  cv_.SignalAll();
  if (!cancel_run.empty()) service_->CancelRun(cancel_run, "the job was aborted");
  return store_->GetJob(id);
}

Status JobManager::MayTakeResults(const JobRecord& job, const std::string& user) const {
  if (user == job.owner || std::find(leads_.begin(), leads_.end(), user) != leads_.end()) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "job ", job.id, "'s models belong to '", job.owner, "', who submitted it",
      leads_.empty()
          ? std::string()
          : absl::StrCat(", and the federation's leads (", absl::StrJoin(leads_, ", "), ")"),
      "; '", user, "' may not take them"));
}

StatusOr<std::string> JobManager::FinalModelPath(const std::string& id,
                                                 const std::string& user) const {
  FEDSILO_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(id));
  FEDSILO_RETURN_IF_ERROR(MayTakeResults(record, user));
  if (record.state != JobState::kDone) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", id, " is ", JobStateName(record.state), "; a final model exists once it is done"));
  }
  return absl::StrCat(state_dir_, "/runs/", record.run_id, "/final_model.fsm");
}

void JobManager::WorkerLoop() {
  while (!Stopping()) {
    StatusOr<std::vector<JobRecord>> jobs = store_->ListJobs();
    std::optional<JobRecord> next;
    if (jobs.ok()) {
      // Interrupted jobs first (they were started before anything queued).
      for (JobRecord& j : *jobs) {
        if (j.state == JobState::kRunning) {
          next = std::move(j);
          break;
        }
      }
      if (!next.has_value()) {
        for (JobRecord& j : *jobs) {
          if (j.state == JobState::kQueued) {
            next = std::move(j);
            break;
          }
        }
      }
    } else {
      spdlog::error("{}", std::string(jobs.status().message()));
    }
    if (!next.has_value()) {
      MutexLock lock(&mu_);
      if (!stopping_) cv_.WaitFor(&mu_, std::chrono::seconds(1));
      continue;
    }
    RunJob(std::move(*next));
  }
}

void JobManager::RunJob(JobRecord record) {
  StatusOr<JobConfig> job = ParseJobConfig(record.job_yaml, absl::StrCat("job ", record.id));
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    current_job_ = record.id;
    current_run_.clear();
    abort_current_ = false;
    stop_run_ = false;
  }
  std::unique_ptr<JobRun> run;
  Status outcome = job.status();
  if (outcome.ok() && record.abort_requested) outcome = absl::CancelledError("aborted");
  if (outcome.ok()) {
    Status running = store_->SetState(record.id, JobState::kRunning);
    if (!running.ok()) outcome = running;
  }
  if (outcome.ok()) {
    Event(record.id, "info",
          record.rounds_completed > 0
              ? absl::StrCat("resuming after round ", record.rounds_completed, " of ",
                             record.rounds_total)
              : std::string("started"));
    if (audit_ != nullptr) {
      audit_->Record(
          "job_started",
          {{"job", record.id}, {"resumed_after_round", std::to_string(record.rounds_completed)}});
    }
    outcome = RunJobRounds(record, *job, &run);
  }
  bool aborted, stopping;
  {
    MutexLock lock(&mu_);
    aborted = abort_current_ || record.abort_requested;
    stopping = stopping_;
    current_job_.clear();
    current_run_.clear();
  }
  Status recorded;
  if (outcome.ok()) {
    recorded = store_->SetState(record.id, JobState::kDone);
    Event(record.id, "info", "done");
  } else if (aborted) {
    StatusOr<JobRecord> now = store_->GetJob(record.id);
    recorded = store_->SetState(record.id, JobState::kAborted,
                                now.ok() && !now->error.empty() ? now->error : "aborted");
    Event(record.id, "warn",
          absl::StrCat("aborted after round ", now.ok() ? now->rounds_completed : 0,
                       "; the round in progress was dropped"));
  } else if (stopping) {
    // Left 'running': the next start resumes it from its last committed round.
    Event(record.id, "warn",
          absl::StrCat("interrupted by the orchestrator's shutdown: ", outcome.message()));
  } else {
    recorded = store_->SetState(record.id, JobState::kFailed, std::string(outcome.message()));
    Event(record.id, "error", absl::StrCat("failed: ", outcome.message()));
  }
  if (!recorded.ok()) spdlog::error("{}", std::string(recorded.message()));
  if (run != nullptr) {
    // An interrupted job's MLflow run stays open for the resumed job; the
    // orchestrator is shutting down, so the backlog gets a short wait.
    run->FinishTracking(
        outcome.ok() ? JobState::kDone
        : aborted    ? JobState::kAborted
        : stopping   ? JobState::kRunning
                     : JobState::kFailed,
        stopping ? std::chrono::milliseconds(2000) : std::chrono::milliseconds::max());
  }
  if (audit_ != nullptr) {
    audit_->Record(outcome.ok() ? "job_done"
                   : aborted    ? "job_aborted"
                   : stopping   ? "job_interrupted"
                                : "job_failed",
                   {{"job", record.id}, {"reason", std::string(outcome.message())}});
  }
  // Each silo's audit log head, signed, kept as an anchor of what it held
  // when the job ended.
  if (!stopping) service_->RequestAuditHeads(record.id);
}

Status JobManager::WaitForSilos(const JobRecord& record, const JobConfig& job, bool every_silo) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(job.federation.wait_for_silos);
  auto next_report = start + std::chrono::seconds(2);  // silos often need a moment
  for (;;) {
    const std::vector<std::string> connected = service_->ConnectedSilos();
    std::vector<std::string> missing;
    for (const std::string& s : job.federation.silos) {
      if (std::find(connected.begin(), connected.end(), s) == connected.end()) missing.push_back(s);
    }
    if (missing.empty()) return absl::OkStatus();
    if (stop_run_) return absl::CancelledError("stopped while waiting for silos");
    const auto now = Clock::now();
    const int present = static_cast<int>(job.federation.silos.size() - missing.size());
    if (now >= deadline) {
      if (every_silo) {
        return absl::UnavailableError(
            absl::StrCat("silos did not connect within ", job.federation.wait_for_silos,
                         " s (federation.wait_for_silos): ", absl::StrJoin(missing, ", "),
                         "; a vertical job needs every party"));
      }
      if (present >= job.federation.min_silos) {
        Event(record.id, "warn",
              absl::StrCat("starting without ", absl::StrJoin(missing, ", "), " (",
                           job.federation.wait_for_silos, " s passed; federation.min_silos is ",
                           job.federation.min_silos, ")"));
        return absl::OkStatus();
      }
      return absl::UnavailableError(
          absl::StrCat("silos did not connect within ", job.federation.wait_for_silos,
                       " s (federation.wait_for_silos): ", absl::StrJoin(missing, ", "), "; ",
                       present, " connected, federation.min_silos is ", job.federation.min_silos));
    }
    if (now >= next_report) {  // a visible status while the job waits
      Event(record.id, "info",
            absl::StrCat("waiting for ", missing.size(), " of ", job.federation.silos.size(),
                         " silos to connect: ", absl::StrJoin(missing, ", ")));
      next_report = now + std::chrono::seconds(10);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

Status JobManager::RunJobRounds(const JobRecord& record, JobConfig job,
                                std::unique_ptr<JobRun>* run) {
  if (Status allowed = CheckMlflow(job); !allowed.ok()) {
    // Queued before the operator changed the list: trained, not exported.
    Event(record.id, "warn", std::string(allowed.message()));
    job.tracking.mlflow.uri.clear();
  }
  FEDSILO_ASSIGN_OR_RETURN(*run, JobRun::Begin(state_dir_, store_, record, job));
  {
    MutexLock lock(&mu_);
    current_run_ = (*run)->run_dir().run_id();
  }
  JobRunOptions options;
  // Remote silos train on their own machines: ask all of them at once.
  options.threads = static_cast<int>(job.federation.silos.size());
  options.stop = &stop_run_;
  options.audit = audit_;
  options.metrics = metrics_;
  options.event = [this, id = record.id](const std::string& level, const std::string& message) {
    Event(id, level, message);
  };
  if (job.kind == JobKind::kVertical) return RunVerticalJob(record, job, run->get(), options);
  if (job.model.kind == ModelKind::kTorchScript) {
    FEDSILO_ASSIGN_OR_RETURN(JobConfig local, ResolveModule(job));
    FEDSILO_ASSIGN_OR_RETURN(options.torchscript, ReadFileOpeningSealed(local.model.torchscript));
  }
  ConnectedSilos reach(service_, federation_ca_pem_,
                       [this, &record](const JobConfig& j) { return WaitForSilos(record, j); });
  ShippedModulePreparer preparer(this, preparer_);
  return (*run)->Run(&reach, &preparer, options).status();
}

Status JobManager::RunVerticalJob(const JobRecord& record, const JobConfig& job, JobRun* run,
                                  const JobRunOptions& options) {
  // Every party holds columns the model needs: none may be missing.
  FEDSILO_RETURN_IF_ERROR(WaitForSilos(record, job, /*every_silo=*/true));
  const std::string& run_id = run->run_dir().run_id();
  std::vector<std::unique_ptr<transport::RemoteSiloConnection>> connections;
  std::vector<std::unique_ptr<transport::RemoteVerticalParty>> parties;
  std::vector<transport::VerticalParty*> pointers;
  for (const std::string& s : job.federation.silos) {
    connections.push_back(std::make_unique<transport::RemoteSiloConnection>(
        s, service_, std::chrono::seconds(job.federation.round_timeout)));
    parties.push_back(
        std::make_unique<transport::RemoteVerticalParty>(connections.back().get(), job, run_id));
    pointers.push_back(parties.back().get());
  }
  // The bottom models' module goes to every party with the job.
  std::string torchscript;
  if (job.model.kind == ModelKind::kTorchScript) {
    FEDSILO_ASSIGN_OR_RETURN(JobConfig local, ResolveModule(job));
    FEDSILO_ASSIGN_OR_RETURN(torchscript, ReadFileOpeningSealed(local.model.torchscript));
  }
  // Each party checks the job against its policy and reads its table.
  for (const auto& party : parties) {
    FEDSILO_RETURN_IF_ERROR(
        Annotate(party->Open(torchscript), absl::StrCat("party '", party->name(), "'")));
  }
  Event(record.id, "info",
        absl::StrCat("every party (", absl::StrJoin(job.federation.silos, ", "),
                     ") took the job; the private set intersection starts"));
  return run->RunVertical(pointers, options).status();
}

}  // namespace fedsilo::orchestrator
