#include "orchestrator/job_run.h"

#include <cstdio>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "orchestrator/round_recorder.h"
#include "strategy/strategy.h"

namespace fedsilo::orchestrator {
namespace {

// Makes each finished round durable: checkpoint and strategy state first,
// then the store, so a committed round always has its model on disk.
// Checkpoints that checkpoint.every does not ask to keep are removed once a
// later round is committed, and the last one too when the job is done.
class RoundCommitter : public RoundObserver {
 public:
  RoundCommitter(const JobConfig* job, std::string job_id, const tracking::RunDirectory* run_dir,
                 RoundRecorder* recorder, OrchestratorMetrics* metrics, RoundObserver* then)
      : job_(job),
        job_id_(std::move(job_id)),
        run_dir_(run_dir),
        recorder_(recorder),
        metrics_(metrics),
        then_(then) {}

  Status OnRoundEnd(const RoundSummary& s, const ModelState& global, int total) override {
    FEDSILO_RETURN_IF_ERROR(run_dir_->WriteCheckpoint(
        s.round, global,
        {{"job", job_->name},
         {"job_id", job_id_},
         {"round", std::to_string(s.round)},
         {"strategy_state", s.strategy_state.empty() ? "none" : "beside"}}));
    if (!s.strategy_state.empty()) {
      FEDSILO_RETURN_IF_ERROR(
          WriteModelStateFile(run_dir_->StrategyStatePath(s.round), s.strategy_state,
                              {{"job_id", job_id_}, {"round", std::to_string(s.round)}}));
    }
    FEDSILO_RETURN_IF_ERROR(recorder_->Commit(s));
    if (metrics_ != nullptr) metrics_->ObserveRound(s.round_seconds);
    RemoveUnkept(s.round, /*done=*/false);
    FEDSILO_RETURN_IF_ERROR(recorder_->LogRound(s, total));
    // The trackers last: a round they failed to take is committed all the same.
    FEDSILO_RETURN_IF_ERROR(recorder_->PassOn());
    return then_ != nullptr ? then_->OnRoundEnd(s, global, total) : absl::OkStatus();
  }

  // Every checkpoint before `round` (up to it once the job is `done`) that
  // checkpoint.every does not keep, including one left by a crash between a
  // commit and its clean-up. The last round's is kept when every > 0.
  void RemoveUnkept(int round, bool done) const {
    const int every = job_->checkpoint.every;
    std::error_code ec;
    const std::string dir = std::filesystem::path(run_dir_->CheckpointPath(round)).parent_path();
    std::vector<std::filesystem::path> unkept;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      int r = 0;
      const std::string name = entry.path().filename().string();
      if (std::sscanf(name.c_str(), "round-%d.", &r) != 1 || r > round) continue;
      // The newest is what a resumed run starts from; once the job is done
      // it stays only as the last round checkpoint.every keeps.
      const bool keep = r == round ? !done || every > 0 : every > 0 && r % every == 0;
      if (!keep) unkept.push_back(entry.path());
    }
    for (const auto& path : unkept) std::filesystem::remove(path, ec);
  }

 private:
  const JobConfig* job_;
  std::string job_id_;
  const tracking::RunDirectory* run_dir_;
  RoundRecorder* recorder_;
  OrchestratorMetrics* metrics_;
  RoundObserver* then_;
};

}  // namespace

JobRun::JobRun(JobStore* store, JobRecord record, JobConfig job, tracking::RunDirectory run_dir,
               FileLock lock, std::unique_ptr<tracking::JsonlMetricsSink> jsonl)
    : store_(store),
      record_(std::move(record)),
      job_(std::move(job)),
      run_dir_(std::move(run_dir)),
      lock_(std::move(lock)),
      jsonl_(std::move(jsonl)) {}

StatusOr<std::unique_ptr<JobRun>> JobRun::Begin(const std::string& state_dir, JobStore* store,
                                                JobRecord record, JobConfig job) {
  std::optional<tracking::RunDirectory> run_dir;
  if (!record.run_id.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(run_dir, tracking::RunDirectory::Open(state_dir, record.run_id));
  } else {
    FEDSILO_ASSIGN_OR_RETURN(run_dir, tracking::RunDirectory::Create(
                                          state_dir, job.name, std::chrono::system_clock::now()));
    FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir->job_path(), record.job_yaml));
    FEDSILO_RETURN_IF_ERROR(store->SetRunId(record.id, run_dir->run_id()));
    record.run_id = run_dir->run_id();
  }
  FEDSILO_ASSIGN_OR_RETURN(FileLock lock,
                           FileLock::Acquire(run_dir->path() + "/lock",
                                             absl::StrCat("run ", run_dir->run_id(),
                                                          " is being run by another process")));
  // What was read before the lock may be stale: its holder may have gone on.
  FEDSILO_ASSIGN_OR_RETURN(record, store->GetJob(record.id));
  FEDSILO_ASSIGN_OR_RETURN(auto jsonl, tracking::JsonlMetricsSink::Open(run_dir->metrics_path()));
  std::unique_ptr<JobRun> run(new JobRun(store, std::move(record), std::move(job),
                                         *std::move(run_dir), std::move(lock), std::move(jsonl)));
  run->mlflow_ = MlflowExport::Start(run->job_, run->record_, run->run_dir_);
  return run;
}

void JobRun::Event(const JobRunOptions& options, const std::string& level,
                   const std::string& message) {
  if (options.event) {
    options.event(level, message);
  } else {
    (void)store_->AddEvent(record_.id, level, message);
  }
}

StatusOr<ModelState> JobRun::Resume(ModelState initial, ModelState* strategy_state) const {
  const int round = record_.rounds_completed;
  if (round <= 0) return initial;
  std::string checkpoint = run_dir_.CheckpointPath(round);
  std::error_code ec;
  if (round >= job_.training.rounds && !std::filesystem::exists(checkpoint, ec)) {
    // Every round was committed and the last checkpoint cleaned up, but the
    // job was not recorded as done: the final model is that round's.
    checkpoint = run_dir_.final_model_path();
  }
  FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ReadModelStateFile(checkpoint));
  FEDSILO_RETURN_IF_ERROR(Annotate(file.state.CheckSameLayout(initial),
                                   absl::StrCat(checkpoint, " does not fit the job's model")));
  const auto said = [&](const char* key) {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  if (said("round") != std::to_string(round) ||
      (!said("job_id").empty() && said("job_id") != record_.id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        checkpoint, " is the model of job ", said("job_id").empty() ? "?" : said("job_id"),
        " after round ", said("round").empty() ? "?" : said("round"), ", not of job ", record_.id,
        " after round ", round));
  }
  const std::string state_path = run_dir_.StrategyStatePath(round);
  if (std::filesystem::exists(state_path, ec)) {
    FEDSILO_ASSIGN_OR_RETURN(ModelFile state, ReadModelStateFile(state_path));
    *strategy_state = std::move(state.state);
  } else if (said("strategy_state") == "beside") {
    return absl::DataLossError(absl::StrCat(
        state_path, " is missing: the strategy's state after round ", round,
        " was written beside its checkpoint, and the run cannot go on the same without it"));
  }
  return std::move(file.state);
}

StatusOr<RunResult> JobRun::Run(SiloReach* reach, JobPreparer* preparer,
                                const JobRunOptions& options) {
  // A job on the silos' own files learns its model's input from the
  // federated statistics, once the silos are here; a built-in data set's
  // job is prepared first, so that a bad job fails before the wait.
  const bool silo_data = !IsBuiltinDataset(job_.data.dataset);
  PreparedJob prepared;
  if (!silo_data) {
    FEDSILO_ASSIGN_OR_RETURN(prepared, preparer->Prepare(job_));
    if (options.prepared) options.prepared(job_, prepared);
  }
  FEDSILO_ASSIGN_OR_RETURN(auto connections, reach->Connect(job_, run_dir_));
  FEDSILO_ASSIGN_OR_RETURN(
      auto strategy,
      strategy::CreateStrategy(job_.strategy, static_cast<int>(job_.federation.silos.size())));
  tracking::FanOutSink metrics_out({jsonl_.get(), mlflow_ ? mlflow_->sink() : nullptr});
  RoundRecorder recorder(store_, record_.id, &metrics_out);
  OrchestratorOptions orchestrator_options;
  orchestrator_options.run_id = run_dir_.run_id();
  orchestrator_options.threads = options.threads;
  orchestrator_options.stop = options.stop;
  orchestrator_options.audit = options.audit;
  orchestrator_options.torchscript = options.torchscript;
  orchestrator_options.federation_ca_pem = reach->federation_ca_pem();
  Orchestrator orchestrator(job_, std::move(orchestrator_options), std::move(connections),
                            std::move(strategy), prepared.evaluator.get(), &recorder);
  if (silo_data) {
    if (job_.preprocess.statistics.empty()) {  // a resumed job has them
      Event(options, "info", "computing the federated statistics of the silos' data");
      FEDSILO_ASSIGN_OR_RETURN(job_.preprocess.statistics, orchestrator.ComputeStatistics());
      const std::string resolved = JobConfigToYaml(job_);
      FEDSILO_RETURN_IF_ERROR(store_->SetJobYaml(record_.id, resolved));
      FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(run_dir_.job_path(), resolved));
      Event(options, "info",
            absl::StrCat("statistics: ", job_.preprocess.statistics.rows, " training rows, ",
                         job_.preprocess.statistics.features.size(), " features"));
    }
    FEDSILO_ASSIGN_OR_RETURN(prepared, preparer->Prepare(job_));
    if (options.prepared) options.prepared(job_, prepared);
  }
  ModelState strategy_state;
  FEDSILO_ASSIGN_OR_RETURN(ModelState global, Resume(std::move(prepared.initial), &strategy_state));
  FEDSILO_RETURN_IF_ERROR(Annotate(orchestrator.RestoreStrategyState(strategy_state),
                                   run_dir_.StrategyStatePath(record_.rounds_completed)));
  RoundCommitter committer(&job_, record_.id, &run_dir_, &recorder, options.metrics,
                           options.progress);
  FEDSILO_ASSIGN_OR_RETURN(RunResult result, orchestrator.Run(std::move(global), &committer,
                                                              record_.rounds_completed + 1));
  // No job id in it: the same job and seed give the same bytes in any store.
  FEDSILO_RETURN_IF_ERROR(WriteModelStateFile(
      run_dir_.final_model_path(), result.final_model,
      {{"job", job_.name}, {"round", std::to_string(result.rounds_completed)}}));
  if (prepared.save_torchscript) {
    FEDSILO_RETURN_IF_ERROR(
        prepared.save_torchscript(result.final_model, run_dir_.final_torchscript_path()));
  }
  committer.RemoveUnkept(result.rounds_completed, /*done=*/true);
  return result;
}

namespace {

// Makes a vertical round durable: its metrics and the parties' part in the
// store, then the trackers. (There is no global model to checkpoint.)
class VerticalRoundCommitter : public RoundObserver {
 public:
  VerticalRoundCommitter(RoundRecorder* recorder, OrchestratorMetrics* metrics, RoundObserver* then)
      : recorder_(recorder), metrics_(metrics), then_(then) {}
  Status OnRoundEnd(const RoundSummary& s, const ModelState& global, int total) override {
    FEDSILO_RETURN_IF_ERROR(recorder_->Commit(s));
    if (metrics_ != nullptr) metrics_->ObserveRound(s.round_seconds);
    FEDSILO_RETURN_IF_ERROR(recorder_->LogRound(s, total));
    FEDSILO_RETURN_IF_ERROR(recorder_->PassOn());
    return then_ != nullptr ? then_->OnRoundEnd(s, global, total) : absl::OkStatus();
  }

 private:
  RoundRecorder* recorder_;
  OrchestratorMetrics* metrics_;
  RoundObserver* then_;
};

}  // namespace

StatusOr<VerticalResult> JobRun::RunVertical(const std::vector<transport::VerticalParty*>& parties,
                                             const JobRunOptions& options) {
  if (record_.rounds_completed > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("run ", run_dir_.run_id(), " is a vertical job stopped after round ",
                     record_.rounds_completed,
                     "; its parties' models were not kept between rounds: run its job again"));
  }
  tracking::FanOutSink metrics_out({jsonl_.get(), mlflow_ ? mlflow_->sink() : nullptr});
  RoundRecorder recorder(store_, record_.id, &metrics_out);
  VerticalRoundCommitter committer(&recorder, options.metrics, options.progress);
  VerticalRunOptions vertical;
  vertical.domain = absl::StrCat("fedsilo/vertical/", run_dir_.run_id());
  vertical.stop = options.stop;
  vertical.metrics = &recorder;
  vertical.observer = &committer;
  vertical.event = [&](const std::string& level, const std::string& message) {
    Event(options, level, message);
  };
  VerticalRun run(job_, parties, std::move(vertical));
  FEDSILO_ASSIGN_OR_RETURN(VerticalAlignment alignment, run.Align());
  return run.Train(alignment);
}

std::optional<tracking::MlflowExportReport> JobRun::FinishTracking(
    JobState state, std::chrono::milliseconds max_wait) {
  if (mlflow_ == nullptr) return std::nullopt;
  return mlflow_->Finish(state, max_wait);
}

}  // namespace fedsilo::orchestrator
