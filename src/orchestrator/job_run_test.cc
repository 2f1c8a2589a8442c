// JobRun against fake silos, with a real run store and real run folders: each
// round is made durable by one observer, and a run stopped anywhere resumes to
// the model of a run nobody stopped. The CLI and daemon tests in tests/ run it
// with real silos and real training.
#include "orchestrator/job_run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/model_state_file.h"
#include "orchestrator/round_recorder.h"

namespace fedsilo::orchestrator {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Sends (index + 1) * round in every coordinate, less a tenth of the global
// model: what it sends depends on where the federation is.
class FakeSilo : public transport::SiloConnection {
 public:
  FakeSilo(std::string name, int index) : name_(std::move(name)), index_(index) {}
  const std::string& silo_name() const override { return name_; }
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
    transport::FitReply reply;
    reply.num_examples = 10 + index_;
    reply.update = transport::ModelOf(r.task)->ZerosLike();
    for (size_t t = 0; t < reply.update.size(); ++t) {
      auto values = reply.update.mutable_tensors()[t].floats();
      auto global = transport::ModelOf(r.task)->tensors()[t].floats();
      for (size_t j = 0; j < values.size(); ++j) {
        values[j] = static_cast<float>((index_ + 1) * r.round) - 0.1f * global[j] +
                    0.01f * static_cast<float>(j);
      }
    }
    reply.metrics["train_loss"] = 1.0 / r.round;
    return reply;
  }
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest&) override {
    return absl::UnimplementedError("no secure aggregation here");
  }

 private:
  std::string name_;
  int index_;
};

class FakeSilos : public SiloReach {
 public:
  StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> Connect(
      const JobConfig& job, const tracking::RunDirectory&) override {
    ++connects;
    std::vector<std::unique_ptr<transport::SiloConnection>> connections;
    for (size_t i = 0; i < job.federation.silos.size(); ++i) {
      connections.push_back(
          std::make_unique<FakeSilo>(job.federation.silos[i], static_cast<int>(i)));
    }
    return connections;
  }
  int connects = 0;
};

class SumEvaluator : public ModelEvaluator {
 public:
  StatusOr<std::map<std::string, double>> Evaluate(const ModelState& global) override {
    double sum = 0;
    for (const Tensor& t : global.tensors()) {
      for (float v : t.floats()) sum += v;
    }
    return std::map<std::string, double>{{"loss", sum}, {"accuracy", 0.5}};
  }
};

// A model of `width` weights and two biases.
class FakePreparer : public JobPreparer {
 public:
  explicit FakePreparer(int64_t width = 4) : width_(width) {}
  StatusOr<PreparedJob> Prepare(const JobConfig&) override {
    PreparedJob prepared;
    FEDSILO_RETURN_IF_ERROR(prepared.initial.Add(Tensor("w", DType::kFloat32, {width_})));
    FEDSILO_RETURN_IF_ERROR(prepared.initial.Add(Tensor("b", DType::kFloat32, {2})));
    prepared.evaluator = std::make_unique<SumEvaluator>();
    prepared.description = "fake";
    return prepared;
  }

 private:
  int64_t width_;
};

// Raises `stop` once round `after` is durable.
class StopAfter : public RoundObserver {
 public:
  StopAfter(int after, std::atomic<bool>* stop) : after_(after), stop_(stop) {}
  Status OnRoundEnd(const RoundSummary& s, const ModelState&, int) override {
    rounds.push_back(s.round);
    if (s.round == after_) *stop_ = true;
    return absl::OkStatus();
  }
  std::vector<int> rounds;

 private:
  int after_;
  std::atomic<bool>* stop_;
};

JobConfig Job(const std::string& strategy, int rounds, int every) {
  StatusOr<JobConfig> job = ParseJobConfig(
      "name: resumable\n"
      "data: {dataset: digits}\n"
      "federation: {silos: 3}\n"
      "training: {rounds: " +
          std::to_string(rounds) +
          "}\n"
          "strategy: {name: " +
          strategy +
          "}\n"
          "checkpoint: {every: " +
          std::to_string(every) + "}\n",
      "test job");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

std::string Bits(const ModelState& state) {
  std::string bits;
  for (const Tensor& t : state.tensors()) {
    bits.append(reinterpret_cast<const char*>(t.data()), t.num_bytes());
  }
  return bits;
}

class JobRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("job_run_test_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(dir_ + "/fedsilo.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { fs::remove_all(dir_); }

  JobRecord Submit(const JobConfig& job) {
    JobRecord record;
    record.name = job.name;
    record.owner = "alice";
    record.job_yaml = JobConfigToYaml(job);
    record.rounds_total = job.training.rounds;
    StatusOr<JobRecord> created = store_->CreateJob(std::move(record));
    EXPECT_TRUE(created.ok()) << created.status();
    return *created;
  }

  // Begins (or goes on with) the store's record `id` and runs it.
  StatusOr<RunResult> RunJob(const std::string& id, JobRunOptions options,
                             JobPreparer* preparer = nullptr) {
    FEDSILO_ASSIGN_OR_RETURN(JobRecord record, store_->GetJob(id));
    FEDSILO_ASSIGN_OR_RETURN(JobConfig job, ParseJobConfig(record.job_yaml, "stored job"));
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<JobRun> run,
                             JobRun::Begin(dir_, store_.get(), record, job));
    run_dir_ = run->run_dir().path();
    FakePreparer fake;
    return run->Run(&silos_, preparer != nullptr ? preparer : &fake, options);
  }

  // Runs the store's record `id` until round `round` is durable, and stops it.
  Status RunAndStopAfter(const std::string& id, int round) {
    std::atomic<bool> stop{false};
    StopAfter stopper(round, &stop);
    JobRunOptions options;
    options.stop = &stop;
    options.progress = &stopper;
    return RunJob(id, options).status();
  }

  std::vector<int> CommittedRounds(const std::string& id) {
    std::vector<int> rounds;
    StatusOr<std::vector<RoundRecord>> recorded = store_->Rounds(id);
    EXPECT_TRUE(recorded.ok()) << recorded.status();
    for (const RoundRecord& r : *recorded) rounds.push_back(r.round);
    return rounds;
  }

  std::vector<std::string> Checkpoints() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(run_dir_ + "/checkpoints", ec)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string dir_;
  std::string run_dir_;
  std::unique_ptr<JobStore> store_;
  FakeSilos silos_;
};

// A vertical run keeps no model between rounds (its parts are with the
// parties): one stopped after a round is refused, saying to run it again,
// before any party is asked anything.
TEST_F(JobRunTest, AVerticalRunStoppedPartWayIsNotResumed) {
  StatusOr<JobConfig> job = ParseJobConfig(
      "kind: vertical\ndata: {dataset: people}\ntraining: {rounds: 3}\n"
      "federation: {silos: [bank, shop]}\nvertical: {label_owner: bank}\n",
      "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  const JobRecord record = Submit(*job);
  {
    StatusOr<std::unique_ptr<JobRun>> run = JobRun::Begin(dir_, store_.get(), record, *job);
    ASSERT_TRUE(run.ok()) << run.status();
  }
  RoundRecord round;
  round.round = 1;
  round.silos_sampled = round.silos_succeeded = 2;
  ASSERT_TRUE(store_->CompleteRound(record.id, round, {}).ok());
  StatusOr<JobRecord> stopped = store_->GetJob(record.id);
  ASSERT_TRUE(stopped.ok());
  ASSERT_EQ(stopped->rounds_completed, 1);
  StatusOr<std::unique_ptr<JobRun>> again = JobRun::Begin(dir_, store_.get(), *stopped, *job);
  ASSERT_TRUE(again.ok()) << again.status();
  StatusOr<VerticalResult> resumed = (*again)->RunVertical({}, JobRunOptions());
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(resumed.status().message()),
              HasSubstr("is a vertical job stopped after round 1"));
  EXPECT_THAT(std::string(resumed.status().message()), HasSubstr("run its job again"));
}

TEST_F(JobRunTest, AStoppedRunResumesToTheModelOfARunNobodyStopped) {
  const JobConfig job = Job("fedadam", 5, 1);
  StatusOr<RunResult> whole = RunJob(Submit(job).id, {});
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->rounds_completed, 5);

  const std::string id = Submit(job).id;
  std::atomic<bool> stop{false};
  StopAfter stopper(2, &stop);
  JobRunOptions options;
  options.stop = &stop;
  options.progress = &stopper;
  StatusOr<RunResult> stopped = RunJob(id, options);
  EXPECT_TRUE(absl::IsCancelled(stopped.status())) << stopped.status();
  EXPECT_EQ(stopper.rounds, (std::vector<int>{1, 2}));
  EXPECT_EQ(store_->GetJob(id)->rounds_completed, 2);
  // Durable before the next round: the model and the server optimizer's moments.
  EXPECT_TRUE(fs::exists(run_dir_ + "/checkpoints/round-0002.fsm"));
  EXPECT_TRUE(fs::exists(run_dir_ + "/checkpoints/round-0002.strategy.fsm"));
  const std::string first_run_dir = run_dir_;

  StopAfter progress(0, &stop);
  stop = false;
  options.progress = &progress;
  StatusOr<RunResult> resumed = RunJob(id, options);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(run_dir_, first_run_dir);  // the same run folder, found again
  EXPECT_EQ(progress.rounds, (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(resumed->rounds_completed, 5);
  EXPECT_EQ(Bits(resumed->final_model), Bits(whole->final_model));
  EXPECT_EQ(CommittedRounds(id), (std::vector<int>{1, 2, 3, 4, 5}));
  StatusOr<ModelFile> final_file = ReadModelStateFile(run_dir_ + "/final_model.fsm");
  ASSERT_TRUE(final_file.ok()) << final_file.status();
  EXPECT_EQ(Bits(final_file->state), Bits(whole->final_model));
  EXPECT_EQ(final_file->metadata.at("round"), "5");
}

// The lines of `path` that hold `text`.
int LinesWith(const std::string& path, const std::string& text) {
  StatusOr<std::string> content = ReadFile(path);
  EXPECT_TRUE(content.ok()) << content.status();
  int n = 0;
  for (size_t at = content->find(text); at != std::string::npos; at = content->find(text, at + 1)) {
    ++n;
  }
  return n;
}

// A round that failed after its metrics were taken but before it was
// committed (its checkpoint could not be written) is run again on resume,
// and metrics.jsonl -- like MLflow -- gets each round once.
TEST_F(JobRunTest, AMetricReachesTheTrackersOnceItsRoundIsCommitted) {
  const std::string id = Submit(Job("fedavg", 4, 1)).id;
  // After round 2 the checkpoints folder is put aside, so round 3's cannot
  // be written.
  class BlockCheckpoints : public RoundObserver {
   public:
    explicit BlockCheckpoints(const std::string* run_dir) : run_dir_(run_dir) {}
    Status OnRoundEnd(const RoundSummary& s, const ModelState&, int) override {
      if (s.round != 2) return absl::OkStatus();
      fs::rename(*run_dir_ + "/checkpoints", *run_dir_ + "/checkpoints.aside");
      return WriteFileAtomically(*run_dir_ + "/checkpoints", "not a folder");
    }

   private:
    const std::string* run_dir_;
  } block(&run_dir_);
  JobRunOptions options;
  options.progress = &block;
  StatusOr<RunResult> failed = RunJob(id, options);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(CommittedRounds(id), (std::vector<int>{1, 2}));
  const std::string metrics = run_dir_ + "/metrics.jsonl";
  EXPECT_EQ(LinesWith(metrics, "\"name\":\"global/test_loss\""), 2);

  fs::remove(run_dir_ + "/checkpoints");
  fs::rename(run_dir_ + "/checkpoints.aside", run_dir_ + "/checkpoints");
  StatusOr<RunResult> resumed = RunJob(id, {});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(CommittedRounds(id), (std::vector<int>{1, 2, 3, 4}));
  for (int round = 1; round <= 4; ++round) {
    EXPECT_EQ(LinesWith(metrics,
                        "{\"name\":\"global/test_loss\",\"round\":" + std::to_string(round) + ","),
              1)
        << "round " << round;
  }
}

// Round 0, the federated statistics, has no commit of its own: its metrics
// reach the trackers at once; a round's wait for the round's commit.
TEST_F(JobRunTest, TheRecorderPassesStatisticsOnAtOnceAndARoundOnceCommitted) {
  class Collecting : public tracking::MetricsSink {
   public:
    Status Record(const tracking::MetricRecord& r) override {
      names.push_back(r.name);
      return absl::OkStatus();
    }
    std::vector<std::string> names;
  } trackers;
  const std::string id = Submit(Job("fedavg", 2, 1)).id;
  RoundRecorder recorder(store_.get(), id, &trackers);
  ASSERT_TRUE(recorder.Record({0, "global", "global/rows", 120, 1.0}).ok());
  EXPECT_EQ(trackers.names, (std::vector<std::string>{"global/rows"}));
  ASSERT_TRUE(recorder.Record({1, "global", "global/test_loss", 0.5, 2.0}).ok());
  EXPECT_EQ(trackers.names.size(), 1u);
  RoundSummary round;
  round.round = 1;
  ASSERT_TRUE(recorder.Commit(round).ok());
  EXPECT_EQ(trackers.names.size(), 1u);  // committed, not yet passed on
  ASSERT_TRUE(recorder.PassOn().ok());
  EXPECT_EQ(trackers.names, (std::vector<std::string>{"global/rows", "global/test_loss"}));
  StatusOr<std::vector<MetricRow>> stored = store_->Metrics(id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->size(), 2u);  // both in the store, with round 1's commit
}

// A checkpoint whose strategy state is gone is refused, naming the file; and
// the test above can tell: resumed without that state, the run ends elsewhere.
TEST_F(JobRunTest, AResumeWithoutTheStrategysStateIsRefusedForItWouldEndElsewhere) {
  const JobConfig job = Job("fedadam", 4, 1);
  StatusOr<RunResult> whole = RunJob(Submit(job).id, {});
  ASSERT_TRUE(whole.ok()) << whole.status();

  const std::string id = Submit(job).id;
  ASSERT_TRUE(absl::IsCancelled(RunAndStopAfter(id, 2)));
  const std::string state = run_dir_ + "/checkpoints/round-0002.strategy.fsm";
  ASSERT_TRUE(fs::remove(state));
  StatusOr<RunResult> refused = RunJob(id, {});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr(state + " is missing"));
  EXPECT_EQ(CommittedRounds(id), (std::vector<int>{1, 2}));

  // The checkpoint rewritten as if the strategy kept no state.
  const std::string checkpoint = run_dir_ + "/checkpoints/round-0002.fsm";
  StatusOr<ModelFile> file = ReadModelStateFile(checkpoint);
  ASSERT_TRUE(file.ok()) << file.status();
  file->metadata.erase("strategy_state");
  ASSERT_TRUE(WriteModelStateFile(checkpoint, file->state, file->metadata).ok());
  StatusOr<RunResult> resumed = RunJob(id, {});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_NE(Bits(resumed->final_model), Bits(whole->final_model));
}

// Another job's checkpoint, or another round's, put in place of the last
// committed one is refused, naming both.
TEST_F(JobRunTest, AnotherJobsOrRoundsCheckpointIsRefused) {
  const JobConfig job = Job("fedavg", 4, 1);
  const std::string other_id = Submit(job).id;
  ASSERT_TRUE(RunJob(other_id, {}).ok());
  const std::string other_dir = run_dir_;

  const std::string id = Submit(job).id;
  ASSERT_TRUE(absl::IsCancelled(RunAndStopAfter(id, 2)));
  const std::string checkpoint = run_dir_ + "/checkpoints/round-0002.fsm";
  fs::copy_file(other_dir + "/checkpoints/round-0002.fsm", checkpoint,
                fs::copy_options::overwrite_existing);
  StatusOr<RunResult> refused = RunJob(id, {});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr(checkpoint + " is the model of job " +
                                                    other_id + " after round 2, not of job " + id));
  fs::copy_file(run_dir_ + "/checkpoints/round-0001.fsm", checkpoint,
                fs::copy_options::overwrite_existing);
  refused = RunJob(id, {});
  EXPECT_THAT(refused.status().message(),
              HasSubstr("after round 1, not of job " + id + " after round 2"));
  EXPECT_EQ(CommittedRounds(id), (std::vector<int>{1, 2}));
}

// Killed after its last round was committed and its checkpoint cleaned up,
// before it was recorded done: the run goes on from its final model.
TEST_F(JobRunTest, ARunWhoseEveryRoundIsCommittedGoesOnFromItsFinalModel) {
  const std::string id = Submit(Job("fedavg", 3, 0)).id;
  StatusOr<RunResult> first = RunJob(id, {});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(Checkpoints().empty());
  StatusOr<RunResult> again = RunJob(id, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rounds_completed, 3);
  EXPECT_EQ(Bits(again->final_model), Bits(first->final_model));
}

TEST_F(JobRunTest, CheckpointEveryKeepsItsRoundsAndTheLastOne) {
  for (const auto& [every, kept] : std::vector<std::pair<int, std::vector<std::string>>>{
           {0, {}},
           {1,
            {"round-0001.fsm", "round-0002.fsm", "round-0003.fsm", "round-0004.fsm",
             "round-0005.fsm"}},
           {2, {"round-0002.fsm", "round-0004.fsm", "round-0005.fsm"}}}) {
    StatusOr<RunResult> run = RunJob(Submit(Job("fedavg", 5, every)).id, {});
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(Checkpoints(), kept) << "checkpoint.every " << every;
    EXPECT_TRUE(fs::exists(run_dir_ + "/final_model.fsm"));
    EXPECT_TRUE(fs::exists(run_dir_ + "/metrics.jsonl"));
  }
}

// A stopped run's folder tampered with: a checkpoint of another model is
// refused, naming the file, and nothing more is committed.
TEST_F(JobRunTest, ACheckpointThatDoesNotFitTheJobsModelIsRefused) {
  const std::string id = Submit(Job("fedavg", 4, 1)).id;
  ASSERT_TRUE(absl::IsCancelled(RunAndStopAfter(id, 2)));
  FakePreparer wider(7);
  StatusOr<PreparedJob> other = wider.Prepare(JobConfig());
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(
      WriteModelStateFile(run_dir_ + "/checkpoints/round-0002.fsm", other->initial, {}).ok());
  StatusOr<RunResult> resumed = RunJob(id, {});
  EXPECT_FALSE(resumed.ok());
  EXPECT_THAT(resumed.status().message(),
              HasSubstr("checkpoints/round-0002.fsm does not fit the job's model"));
  EXPECT_EQ(CommittedRounds(id), (std::vector<int>{1, 2}));
}

// Two runs of one run folder at once would interleave their rounds: the
// second is refused while the first holds it, and may go on once it is gone.
TEST_F(JobRunTest, ARunFolderIsRunByOneJobRunAtATime) {
  const std::string id = Submit(Job("fedavg", 2, 1)).id;
  const JobConfig job = Job("fedavg", 2, 1);
  StatusOr<std::unique_ptr<JobRun>> first =
      JobRun::Begin(dir_, store_.get(), *store_->GetJob(id), job);
  ASSERT_TRUE(first.ok()) << first.status();
  StatusOr<JobRecord> recorded = store_->GetJob(id);
  ASSERT_TRUE(recorded.ok());
  EXPECT_EQ(recorded->run_id, (*first)->run_dir().run_id());
  StatusOr<std::unique_ptr<JobRun>> second = JobRun::Begin(dir_, store_.get(), *recorded, job);
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  EXPECT_THAT(second.status().message(),
              HasSubstr("run " + recorded->run_id + " is being run by another process"));
  first->reset();
  EXPECT_TRUE(JobRun::Begin(dir_, store_.get(), *recorded, job).ok());
}

// The job's preparer failing (a bad job) stops the run before any silo is
// reached.
TEST_F(JobRunTest, AJobThatCannotBePreparedFailsBeforeItsSilosAreReached) {
  class Refusing : public JobPreparer {
   public:
    StatusOr<PreparedJob> Prepare(const JobConfig&) override {
      return absl::InvalidArgumentError("model.hidden: too wide for data.dataset 'digits'");
    }
  } refusing;
  StatusOr<RunResult> run = RunJob(Submit(Job("fedavg", 2, 1)).id, {}, &refusing);
  EXPECT_TRUE(absl::IsInvalidArgument(run.status())) << run.status();
  EXPECT_EQ(silos_.connects, 0);
  EXPECT_TRUE(fs::exists(run_dir_ + "/job.yaml"));  // on record all the same
}

}  // namespace
}  // namespace fedsilo::orchestrator
