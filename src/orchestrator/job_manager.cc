#include "orchestrator/job_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "core/mutex.h"
#include "core/unix_time.h"
#include "orchestrator/mlflow_export.h"
#include "orchestrator/round_recorder.h"
#include "strategy/strategy.h"
#include "tracking/run_directory.h"

namespace fedsilo::orchestrator {
namespace {

// Makes each finished round durable: checkpoint first, then the store, so a
// committed round always has its model on disk. Checkpoints that
// checkpoint.every does not ask to keep are removed once a later round is
// committed.
class RoundCommitter : public RoundObserver {
 public:
  RoundCommitter(const JobConfig* job, std::string job_id, const tracking::RunDirectory* run_dir,
                 RoundRecorder* recorder, OrchestratorMetrics* metrics)
      : job_(job),
        job_id_(std::move(job_id)),
        run_dir_(run_dir),
        recorder_(recorder),
        metrics_(metrics) {}

  Status OnRoundEnd(const RoundSummary& s, const ModelState& global, int total) override {
    FEDSILO_RETURN_IF_ERROR(run_dir_->WriteCheckpoint(
        s.round, global,
        {{"job", job_->name}, {"job_id", job_id_}, {"round", std::to_string(s.round)}}));
    if (!s.strategy_state.empty()) {
      FEDSILO_RETURN_IF_ERROR(
          WriteModelStateFile(run_dir_->StrategyStatePath(s.round), s.strategy_state,
                              {{"job_id", job_id_}, {"round", std::to_string(s.round)}}));
    }
    FEDSILO_RETURN_IF_ERROR(recorder_->Commit(s));
    if (metrics_ != nullptr) metrics_->ObserveRound(s.round_seconds);
    RemoveUnkeptCheckpoints(s.round);
    return recorder_->LogRound(s, total);
  }

 private:
  // Every checkpoint before `round` that checkpoint.every does not keep,
  // including one left by a crash between a commit and its clean-up.
  void RemoveUnkeptCheckpoints(int round) const {
    const int every = job_->checkpoint.every;
    std::error_code ec;
    const std::string dir = std::filesystem::path(run_dir_->CheckpointPath(round)).parent_path();
    std::vector<std::filesystem::path> unkept;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      int r = 0;
      const std::string name = entry.path().filename().string();
      if (std::sscanf(name.c_str(), "round-%d.", &r) != 1 || r >= round) continue;
      if (every <= 0 || r % every != 0) unkept.push_back(entry.path());
    }
    for (const auto& path : unkept) std::filesystem::remove(path, ec);
  }

  const JobConfig* job_;
  std::string job_id_;
  const tracking::RunDirectory* run_dir_;
  RoundRecorder* recorder_;
  OrchestratorMetrics* metrics_;
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
  std::unique_ptr<MlflowExport> mlflow;
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
    outcome = RunJobRounds(record, *job, &mlflow);
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
  if (mlflow != nullptr) {
    // An interrupted job's MLflow run stays open for the resumed job; the
    // orchestrator is shutting down, so the backlog gets a short wait.
    mlflow->Finish(outcome.ok() ? JobState::kDone
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

Status JobManager::WaitForSilos(const JobRecord& record, const JobConfig& job) {
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
                                std::unique_ptr<MlflowExport>* mlflow) {
  // The run folder: made on the first start, found again on a resume.
  std::optional<tracking::RunDirectory> run_dir;
  if (!record.run_id.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(run_dir, tracking::RunDirectory::Open(state_dir_, record.run_id));
  } else {
    FEDSILO_ASSIGN_OR_RETURN(run_dir, tracking::RunDirectory::Create(
                                          state_dir_, job.name, std::chrono::system_clock::now()));
    FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir->job_path(), record.job_yaml));
    FEDSILO_RETURN_IF_ERROR(store_->SetRunId(record.id, run_dir->run_id()));
  }
  {
    MutexLock lock(&mu_);
    current_run_ = run_dir->run_id();
  }

  FEDSILO_ASSIGN_OR_RETURN(JobConfig local, ResolveModule(job));
  // A job on the silos' own files learns its model's input from the
  // federated statistics, once the silos are here; a built-in data set's
  // job is prepared first, so that a bad job fails before the wait.
  const bool silo_data = !IsBuiltinDataset(job.data.dataset);
  PreparedJob prepared;
  if (!silo_data) {
    FEDSILO_ASSIGN_OR_RETURN(prepared, preparer_->Prepare(local));
  }
  FEDSILO_RETURN_IF_ERROR(WaitForSilos(record, job));

  std::vector<std::unique_ptr<transport::SiloConnection>> connections;
  for (const std::string& s : job.federation.silos) {
    connections.push_back(std::make_unique<transport::RemoteSiloConnection>(
        s, service_, std::chrono::seconds(job.federation.round_timeout)));
  }
  FEDSILO_ASSIGN_OR_RETURN(
      auto strategy,
      strategy::CreateStrategy(job.strategy, static_cast<int>(job.federation.silos.size())));
  if (Status allowed = CheckMlflow(job); !allowed.ok()) {
    // Queued before the operator changed the list: trained, not exported.
    Event(record.id, "warning", std::string(allowed.message()));
    job.tracking.mlflow.uri.clear();
  }
  *mlflow = MlflowExport::Start(job, record, *run_dir);
  RoundRecorder recorder(store_, record.id, *mlflow ? (*mlflow)->sink() : nullptr);
  OrchestratorOptions options;
  options.run_id = run_dir->run_id();
  // Remote silos train on their own machines: ask all of them at once.
  options.threads = static_cast<int>(job.federation.silos.size());
  options.stop = &stop_run_;
  options.audit = audit_;
  options.federation_ca_pem = federation_ca_pem_;
  if (job.model.kind == ModelKind::kTorchScript) {
    FEDSILO_ASSIGN_OR_RETURN(options.torchscript, ReadFileOpeningSealed(local.model.torchscript));
  }
  Orchestrator orchestrator(job, options, std::move(connections), std::move(strategy),
                            prepared.evaluator.get(), &recorder, nullptr);
  if (silo_data) {
    if (job.preprocess.statistics.empty()) {  // a resumed job has them
      Event(record.id, "info", "computing the federated statistics of the silos' data");
      FEDSILO_ASSIGN_OR_RETURN(job.preprocess.statistics, orchestrator.ComputeStatistics());
      const std::string resolved = JobConfigToYaml(job);
      FEDSILO_RETURN_IF_ERROR(store_->SetJobYaml(record.id, resolved));
      FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir->job_path(), resolved));
      Event(record.id, "info",
            absl::StrCat("statistics: ", job.preprocess.statistics.rows, " training rows, ",
                         job.preprocess.statistics.features.size(), " features"));
    }
    local.preprocess.statistics = job.preprocess.statistics;
    FEDSILO_ASSIGN_OR_RETURN(prepared, preparer_->Prepare(local));
  }
  RoundCommitter committer(&job, record.id, &*run_dir, &recorder, metrics_);
  ModelState global = std::move(prepared.initial);
  ModelState strategy_state;
  if (record.rounds_completed > 0) {
    const std::string checkpoint = run_dir->CheckpointPath(record.rounds_completed);
    FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ReadModelStateFile(checkpoint));
    FEDSILO_RETURN_IF_ERROR(Annotate(file.state.CheckSameLayout(global),
                                     absl::StrCat(checkpoint, " does not fit the job's model")));
    global = std::move(file.state);
    const std::string state_path = run_dir->StrategyStatePath(record.rounds_completed);
    std::error_code ec;
    if (std::filesystem::exists(state_path, ec)) {
      FEDSILO_ASSIGN_OR_RETURN(ModelFile state, ReadModelStateFile(state_path));
      strategy_state = std::move(state.state);
    }
  }
  FEDSILO_RETURN_IF_ERROR(Annotate(orchestrator.RestoreStrategyState(strategy_state),
                                   run_dir->StrategyStatePath(record.rounds_completed)));
  FEDSILO_ASSIGN_OR_RETURN(RunResult result, orchestrator.Run(std::move(global), &committer,
                                                              record.rounds_completed + 1));
  FEDSILO_RETURN_IF_ERROR(
      WriteModelStateFile(run_dir->final_model_path(), result.final_model,
                          {{"job", job.name},
                           {"job_id", record.id},
                           {"round", std::to_string(result.rounds_completed)}}));
  if (prepared.save_torchscript) {
    FEDSILO_RETURN_IF_ERROR(
        prepared.save_torchscript(result.final_model, run_dir->final_torchscript_path()));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::orchestrator
