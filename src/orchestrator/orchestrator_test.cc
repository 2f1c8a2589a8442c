// Orchestrator logic against fake silos; the end-to-end tests in tests/ run it
// with real silo agents and real training.
#include "orchestrator/orchestrator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <variant>

#include "core/model_state_file.h"
#include "strategy/fed_avg.h"

namespace fedsilo::orchestrator {
namespace {

using ::testing::HasSubstr;

enum class Fault { kNone, kError, kNan, kWrongShape, kNoExamples };

// Irregular values whose float sums depend on the order they are added in.
float Noise(int index, int j) {
  const double x = std::sin(1.0 + index * 12.9898 + j * 78.233) * 43758.5453;
  return static_cast<float>((x - std::floor(x)) * std::pow(10.0, index % 4));
}

// Makes silos' replies arrive in a set order, whatever the threads' timing:
// each reply waits for its turn.
class ReplyOrder {
 public:
  // Waits (up to a minute, so that a wrong order fails rather than hangs)
  // until the replies before `turn` have gone, then lets this one go.
  void Take(int turn, const std::string& silo) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool in_turn = cv_.wait_for(lock, std::chrono::minutes(1), [&] { return next_ == turn; });
    EXPECT_TRUE(in_turn) << silo << " waited for turn " << turn << " in vain";
    arrived_.push_back(silo);
    ++next_;
    cv_.notify_all();
  }
  std::vector<std::string> arrived() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrived_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int next_ = 0;
  std::vector<std::string> arrived_;
};

// What a round's remote update sources see: which updates are on their way
// or held by the orchestrator. Folding is sequential, in sampling order, so
// when update k is fetched every update before it has been folded; the
// updates in the orchestrator are then k and any later one already started.
class Transfers {
 public:
  void Prefetched(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (index != fetched_) ++prefetched_ahead_;
    Start(index);
  }
  void Fetched(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    fetched_ = index;
    Start(index);
  }
  int max_in_orchestrator() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_;
  }
  int prefetched_ahead() {
    std::lock_guard<std::mutex> lock(mu_);
    return prefetched_ahead_;
  }

 private:
  void Start(int index) {
    started_.insert(index);
    const int held = static_cast<int>(
        std::distance(started_.lower_bound(std::max(fetched_, 0)), started_.end()));
    max_ = std::max(max_, held);
  }
  std::mutex mu_;
  std::set<int> started_;
  int fetched_ = -1;
  int max_ = 0;
  int prefetched_ahead_ = 0;  // transfers started before their turn to be folded
};

class CountingSource : public transport::UpdateSource {
 public:
  CountingSource(Transfers* transfers, int index, ModelState update)
      : transfers_(transfers), index_(index), update_(std::move(update)) {}
  void Prefetch() override { transfers_->Prefetched(index_); }
  StatusOr<ModelState> Fetch() override {
    transfers_->Fetched(index_);
    return std::move(update_);
  }

 private:
  Transfers* transfers_;
  int index_;
  ModelState update_;
};

// A silo whose update is (index + 1) * round in every coordinate, weighted by
// `examples`.
class FakeSilo : public transport::SiloConnection {
 public:
  FakeSilo(std::string name, int index, int64_t examples, Fault fault, bool noisy = false)
      : name_(std::move(name)), index_(index), examples_(examples), fault_(fault), noisy_(noisy) {}
  // Its reply goes at `turn` of `order`.
  void ReplyAt(ReplyOrder* order, int turn) {
    order_ = order;
    turn_ = turn;
  }
  const std::string& silo_name() const override { return name_; }
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
    StatusOr<transport::FitReply> reply = Answer(r);
    if (order_ != nullptr) order_->Take(turn_, name_);
    return reply;
  }
  bool Reachable() const override { return reachable; }
  StatusOr<transport::FitReply> Answer(const transport::TaskRequest& r) {
    calls.push_back(r.round);
    if (fault_ == Fault::kError) return absl::UnavailableError("disk full");
    if (r.round == fail_round && fail_times > 0) {
      --fail_times;
      if (gone_after_failure) reachable = false;
      return absl::UnavailableError("connection lost");
    }
    transport::FitReply reply;
    reply.num_examples = fault_ == Fault::kNoExamples ? 0 : examples_;
    reply.update = transport::ModelOf(r.task)->ZerosLike();
    for (Tensor& t : reply.update.mutable_tensors()) {
      auto values = t.floats();
      for (size_t j = 0; j < values.size(); ++j) {
        values[j] = noisy_ ? Noise(index_, static_cast<int>(j))
                           : static_cast<float>((index_ + 1) * r.round);
      }
    }
    if (fault_ == Fault::kNan) reply.update.mutable_tensors()[0].floats()[0] = NAN;
    if (fault_ == Fault::kWrongShape) {
      reply.update = ModelState();
      (void)reply.update.Add(Tensor::FromFloats("w", {1}, {1}));
    }
    reply.metrics["train_loss"] = 1.0 / r.round;
    if (transfers != nullptr) {
      // Left at the silo until the orchestrator fetches it.
      reply.source = std::make_shared<CountingSource>(transfers, index_, std::move(reply.update));
      reply.update = ModelState();
    }
    if (r.job->privacy.secure_aggregation.enabled) {
      // A real secure-aggregation silo masks this fake's update.
      secagg_.SetInput(r.run_id, r.round, std::move(reply.update), reply.num_examples);
      reply.update = ModelState();
      reply.num_examples = 0;
      steps_ = 0;
    }
    return reply;
  }
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest& r) override {
    if (leave_at_stage > 0 && ++steps_ >= leave_at_stage) {
      return absl::UnavailableError("connection lost");
    }
    return secagg_.Handle(r.run_id, r.round, r.payload);
  }
  std::vector<int> calls;
  int fail_round = 0;  // its first `fail_times` tasks of that round fail
  int fail_times = 0;
  int leave_at_stage = 0;           // > 0: stops answering at that secure-aggregation stage
  bool gone_after_failure = false;  // unreachable from its first failure on
  std::atomic<bool> reachable{true};
  Transfers* transfers = nullptr;  // set: the update is fetched from a CountingSource

 private:
  std::string name_;
  int index_;
  int64_t examples_;
  Fault fault_;
  bool noisy_;
  ReplyOrder* order_ = nullptr;
  int turn_ = 0;
  secure::SecAggSilo secagg_{name_};
  int steps_ = 0;
};

class RecordingSink : public tracking::MetricsSink {
 public:
  Status Record(const tracking::MetricRecord& r) override {
    std::lock_guard<std::mutex> lock(mu);
    records.push_back(r);
    return absl::OkStatus();
  }
  std::mutex mu;
  std::vector<tracking::MetricRecord> records;
};

class SumEvaluator : public ModelEvaluator {
 public:
  StatusOr<std::map<std::string, double>> Evaluate(const ModelState& global) override {
    double sum = 0;
    for (float v : global.tensors()[0].floats()) sum += v;
    return std::map<std::string, double>{{"loss", sum}, {"accuracy", 0.5}};
  }
};

ModelState Global() {
  ModelState s;
  EXPECT_TRUE(s.Add(Tensor::FromFloats("w", {2, 2}, {0, 0, 0, 0})).ok());
  EXPECT_TRUE(s.Add(Tensor::FromFloats("b", {2}, {0, 0})).ok());
  return s;
}

// A larger model, so that rounding differences between orders surely show.
ModelState BigGlobal() {
  ModelState s;
  EXPECT_TRUE(s.Add(Tensor("w", DType::kFloat32, {256})).ok());
  return s;
}

JobConfig Job(int silos, int rounds) {
  JobConfig job;
  job.training.rounds = rounds;
  for (int i = 1; i <= silos; ++i) job.federation.silos.push_back("s" + std::to_string(i));
  return job;
}

struct Fixture {
  std::vector<FakeSilo*> silos;
  std::vector<std::unique_ptr<transport::SiloConnection>> connections;
  void Add(int index, int64_t examples, Fault fault = Fault::kNone, bool noisy = false) {
    auto s =
        std::make_unique<FakeSilo>("s" + std::to_string(index + 1), index, examples, fault, noisy);
    silos.push_back(s.get());
    connections.push_back(std::move(s));
  }
};

TEST(OrchestratorTest, AppliesTheExampleWeightedMeanEachRound) {
  JobConfig job = Job(3, 2);
  Fixture f;
  f.Add(0, 1);
  f.Add(1, 2);
  f.Add(2, 5);
  SumEvaluator eval;
  RecordingSink sink;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, &sink);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rounds_completed, 2);
  // Round r's updates are (1, 2, 3) * r with weights 1, 2, 5:
  // mean = (1 + 4 + 15) / 8 * r = 2.5 r. Round 1: 0 -> 2.5; round 2: 2.5 + 5 = 7.5.
  for (float v : result->final_model.tensors()[0].floats()) EXPECT_FLOAT_EQ(v, 7.5f);
  EXPECT_DOUBLE_EQ(result->final_metrics.at("loss"), 4 * 7.5);

  std::set<std::string> names;
  for (const auto& r : sink.records) names.insert(r.name);
  for (const char* n : {"s1/train_loss", "s3/num_examples", "global/test_loss",
                        "global/test_accuracy", "global/silos_succeeded"}) {
    EXPECT_EQ(names.count(n), 1u) << n;
  }
}

// Trains trivially and scores the global model as told: `answer`, with
// `forged` metrics written over it on the way.
class EvaluatingSilo : public transport::SiloConnection {
 public:
  EvaluatingSilo(std::string name, transport::EvaluateAnswer answer,
                 std::map<std::string, double> forged = {})
      : name_(std::move(name)), answer_(std::move(answer)), forged_(std::move(forged)) {}
  const std::string& silo_name() const override { return name_; }
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
    if (!std::holds_alternative<transport::EvaluateTask>(r.task)) {
      transport::FitReply reply;
      reply.num_examples = 10;
      reply.update = transport::ModelOf(r.task)->ZerosLike();
      return reply;
    }
    transport::FitReply reply = transport::Encode(answer_);
    for (const auto& [name, value] : forged_) reply.metrics[name] = value;
    return reply;
  }
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest&) override {
    return absl::UnimplementedError("no secure aggregation here");
  }

 private:
  std::string name_;
  transport::EvaluateAnswer answer_;
  std::map<std::string, double> forged_;
};

transport::EvaluateAnswer Scored(int64_t examples, double loss, double accuracy, int64_t tp,
                                 int64_t fp, int64_t fn, double auc) {
  transport::EvaluateAnswer a;
  a.examples = examples;
  a.loss = loss;
  a.accuracy = accuracy;
  transport::BinaryEvaluation& b = a.binary.emplace();
  b.true_positives = tp;
  b.false_positives = fp;
  b.false_negatives = fn;
  b.precision = tp + fp > 0 ? static_cast<double>(tp) / static_cast<double>(tp + fp) : 0.0;
  b.recall = tp + fn > 0 ? static_cast<double>(tp) / static_cast<double>(tp + fn) : 0.0;
  b.auc = auc;
  return a;
}

// With no evaluator here the silos score the global model. A silo whose
// evaluation carries counts that are not counts is left out of the round's
// metrics (a hostile one would drag them anywhere); the others' pooled
// values stand, and the round goes on.
TEST(OrchestratorTest, ASilosEvaluationWithForgedCountsIsLeftOut) {
  const JobConfig job = Job(3, 1);
  std::vector<std::unique_ptr<transport::SiloConnection>> silos;
  silos.push_back(std::make_unique<EvaluatingSilo>("s1", Scored(10, 1.0, 0.5, 2, 1, 1, 0.7)));
  silos.push_back(std::make_unique<EvaluatingSilo>("s2", Scored(30, 2.0, 0.9, 6, 0, 2, 0.9)));
  silos.push_back(
      std::make_unique<EvaluatingSilo>("s3", Scored(1000, 0.0, 1.0, 500, 0, 0, 1.0),
                                       std::map<std::string, double>{{"false_positives", -400}}));
  RecordingSink sink;
  Orchestrator o(job, {"run", 2}, std::move(silos), std::make_unique<strategy::FedAvg>(),
                 /*evaluator=*/nullptr, &sink);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::map<std::string, double>& m = result->final_metrics;
  EXPECT_DOUBLE_EQ(m.at("loss"), (10 * 1.0 + 30 * 2.0) / 40);
  EXPECT_DOUBLE_EQ(m.at("accuracy"), (10 * 0.5 + 30 * 0.9) / 40);
  EXPECT_DOUBLE_EQ(m.at("precision"), 8.0 / 9.0);
  EXPECT_DOUBLE_EQ(m.at("recall"), 8.0 / 11.0);
  EXPECT_DOUBLE_EQ(m.at("auc"), (10 * 0.7 + 30 * 0.9) / 40);  // no histograms: the mean
  for (const tracking::MetricRecord& r : sink.records) {
    EXPECT_NE(r.name, "s3/global_test_loss");
  }
}

// Central DP: every update is clipped to clip_norm and the silos weigh
// equally, whatever their example counts; the run records its epsilon.
TEST(OrchestratorTest, CentralDpClipsAndWeighsSilosEqually) {
  JobConfig job = Job(3, 1);
  job.privacy.dp.mode = DpMode::kCentral;
  job.privacy.dp.noise_multiplier = 1e-9;  // noise negligible: check the clipping
  job.privacy.dp.clip_norm = 0.3;
  Fixture f;
  f.Add(0, 1);    // update 1 in all 6 coordinates: norm sqrt(6), clipped to 0.3
  f.Add(1, 100);  // update 2: also clipped to 0.3
  f.Add(2, 5);
  SumEvaluator eval;
  RecordingSink sink;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, &sink);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  // Each clipped update is 0.3 / sqrt(6) per coordinate; their equal-weight
  // mean is the same, and no silo's example count changes it.
  for (const Tensor& t : result->final_model.tensors()) {
    for (float v : t.floats()) EXPECT_NEAR(v, 0.3 / std::sqrt(6.0), 1e-6);
  }
  bool epsilon = false;
  for (const auto& r : sink.records) epsilon = epsilon || r.name == "global/epsilon";
  EXPECT_TRUE(epsilon);
}

TEST(OrchestratorTest, ResultDoesNotDependOnArrivalOrderOrThreads) {
  // Folding these updates in another order rounds differently: check that the
  // test can tell before relying on it.
  auto fold = [](const std::vector<int>& order) {
    strategy::FedAvg avg(1.0, 2);
    EXPECT_TRUE(avg.BeginRound(BigGlobal()).ok());
    for (int i : order) {
      ModelState u = BigGlobal();
      for (Tensor& t : u.mutable_tensors()) {
        auto values = t.floats();
        for (size_t j = 0; j < values.size(); ++j) values[j] = Noise(i, static_cast<int>(j));
      }
      EXPECT_TRUE(avg.Accumulate(std::move(u), 10 + 7 * i).ok());
    }
    const ModelState next = *avg.Finish();
    std::string bits;
    for (const Tensor& t : next.tensors())
      bits.append(reinterpret_cast<const char*>(t.data()), t.num_bytes());
    return bits;
  };
  const std::string in_order = fold({0, 1, 2, 3, 4, 5});
  ASSERT_FALSE(in_order == fold({5, 4, 3, 2, 1, 0}) && in_order == fold({1, 0, 3, 2, 5, 4}));

  for (int threads : {1, 6}) {
    JobConfig job = Job(6, 1);
    Fixture f;
    for (int i = 0; i < 6; ++i) f.Add(i, 10 + 7 * i, Fault::kNone, /*noisy=*/true);
    // In parallel, later silos answer first.
    ReplyOrder order;
    if (threads > 1) {
      for (int i = 0; i < 6; ++i) f.silos[i]->ReplyAt(&order, 5 - i);
    }
    SumEvaluator eval;
    Orchestrator o(job, {"run", threads}, std::move(f.connections),
                   std::make_unique<strategy::FedAvg>(1.0, 2), &eval, nullptr);
    StatusOr<RunResult> result = o.Run(BigGlobal(), nullptr);
    ASSERT_TRUE(result.ok());
    std::string bits;
    for (const Tensor& t : result->final_model.tensors()) {
      bits.append(reinterpret_cast<const char*>(t.data()), t.num_bytes());
    }
    EXPECT_TRUE(bits == in_order) << threads << " threads";
    if (threads > 1) {
      EXPECT_EQ(order.arrived(), (std::vector<std::string>{"s6", "s5", "s4", "s3", "s2", "s1"}));
    }
  }
}

TEST(OrchestratorTest, BadUpdatesAreDroppedAndNamed) {
  JobConfig job = Job(5, 1);
  job.federation.min_silos = 1;
  Fixture f;
  f.Add(0, 4);
  f.Add(1, 4, Fault::kNan);
  f.Add(2, 4, Fault::kWrongShape);
  f.Add(3, 4, Fault::kError);
  f.Add(4, 4, Fault::kNoExamples);
  SumEvaluator eval;
  struct Capture : RoundObserver {
    Status OnRoundEnd(const RoundSummary& s, const ModelState&, int) override {
      summary = s;
      return absl::OkStatus();
    }
    RoundSummary summary;
  } capture;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  StatusOr<RunResult> result = o.Run(Global(), &capture);
  ASSERT_TRUE(result.ok()) << result.status();
  // Only s1's update (all ones) was applied.
  for (float v : result->final_model.tensors()[0].floats()) EXPECT_FLOAT_EQ(v, 1.0f);
  EXPECT_EQ(capture.summary.silos_sampled, 5);
  EXPECT_EQ(capture.summary.silos_succeeded, 1);
  ASSERT_EQ(capture.summary.failures.size(), 4u);
  EXPECT_THAT(capture.summary.failures[0], HasSubstr("s2: update rejected: tensor 'w' holds nan"));
  EXPECT_THAT(capture.summary.failures[1], HasSubstr("s3: update rejected: has 1 tensors"));
  EXPECT_THAT(capture.summary.failures[2], HasSubstr("s4: disk full"));
  EXPECT_THAT(capture.summary.failures[3], HasSubstr("s5: update rejected: num_examples is 0"));
}

// The rounds that ended, and the model each one made (what a checkpoint
// observer would keep).
struct RoundsEnded : RoundObserver {
  Status OnRoundEnd(const RoundSummary& s, const ModelState& model, int) override {
    rounds.push_back(s.round);
    models.push_back(SerializeModelState(model));
    return absl::OkStatus();
  }
  std::vector<int> rounds;
  std::vector<std::string> models;
};

// Round 2 falls below min_silos: the job fails naming why, and round 2 never
// ends -- the last model handed on (to checkpoints, the store) is round 1's.
TEST(OrchestratorTest, RoundBelowMinSilosFailsAndTheLastModelStaysRoundOnes) {
  JobConfig job = Job(3, 2);
  job.federation.min_silos = 2;
  job.federation.round_retries = 1;
  Fixture f;
  f.Add(0, 4);
  f.Add(1, 4);
  f.Add(2, 4);
  for (int i : {1, 2}) {
    f.silos[i]->fail_round = 2;
    f.silos[i]->fail_times = 100;
  }
  SumEvaluator eval;
  RoundsEnded ended;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  StatusOr<RunResult> result = o.Run(Global(), &ended);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(),
              HasSubstr("round 2: only 1 of 3 sampled silos returned a valid update "
                        "(federation.min_silos is 2)"));
  EXPECT_THAT(result.status().message(), HasSubstr("s2: connection lost"));
  EXPECT_EQ(ended.rounds, std::vector<int>{1});

  // Round 1's model is the one a one-round job makes.
  JobConfig one = Job(3, 1);
  Fixture g;
  for (int i = 0; i < 3; ++i) g.Add(i, 4);
  RoundsEnded control;
  Orchestrator p(one, {"run", 2}, std::move(g.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  ASSERT_TRUE(p.Run(Global(), &control).ok());
  ASSERT_EQ(ended.models.size(), 1u);
  EXPECT_EQ(ended.models[0], control.models[0]);
  EXPECT_NE(ended.models[0], SerializeModelState(Global()));
}

// A silo that leaves in the middle of round 2: the round runs again, and the
// job ends with the model of a run nobody left, each round's metrics once.
TEST(OrchestratorTest, ARoundSilosLeftIsRunAgainAndTheModelIsTheUndisturbedOne) {
  auto run = [](int fail_times, int retries, RecordingSink* sink,
                std::vector<int>* calls) -> StatusOr<RunResult> {
    JobConfig job = Job(3, 3);
    job.federation.min_silos = 3;
    job.federation.round_retries = retries;
    job.federation.wait_for_silos = 1;
    Fixture f;
    for (int i = 0; i < 3; ++i) f.Add(i, 1 + i, Fault::kNone, /*noisy=*/true);
    f.silos[1]->fail_round = 2;
    f.silos[1]->fail_times = fail_times;
    FakeSilo* second = f.silos[1];
    SumEvaluator eval;
    Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                   &eval, sink);
    StatusOr<RunResult> result = o.Run(Global(), nullptr);
    if (calls != nullptr) *calls = second->calls;
    return result;
  };
  StatusOr<RunResult> undisturbed = run(0, 2, nullptr, nullptr);
  ASSERT_TRUE(undisturbed.ok()) << undisturbed.status();
  RecordingSink sink;
  std::vector<int> calls;
  StatusOr<RunResult> retried = run(2, 2, &sink, &calls);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(calls, (std::vector<int>{1, 2, 2, 2, 3}));
  for (size_t t = 0; t < retried->final_model.size(); ++t) {
    const auto a = retried->final_model.tensors()[t].floats();
    const auto b = undisturbed->final_model.tensors()[t].floats();
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  }
  std::map<std::pair<int, std::string>, int> seen;
  for (const auto& r : sink.records) ++seen[{r.round, r.name}];
  for (const auto& [key, count] : seen) {
    EXPECT_EQ(count, 1) << "round " << key.first << " " << key.second;
  }
  EXPECT_EQ(seen.count({2, "s1/train_loss"}), 1u);
  // Out of retries, the round fails as before, naming the silo.
  StatusOr<RunResult> failed = run(3, 2, nullptr, nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("round 2: only 2 of 3"));
  EXPECT_THAT(failed.status().message(), HasSubstr("s2: connection lost"));
  EXPECT_FALSE(run(1, 0, nullptr, nullptr).ok());  // round_retries: 0
}

// Round retries, as ARoundSilosLeftIsRunAgain... runs them: s2 fails round 2
// once. `change` alters the job; `calls` gets s2's rounds.
StatusOr<RunResult> RunWithOneFailure(const std::function<void(JobConfig&)>& change,
                                      std::vector<int>* calls, bool gone = false) {
  JobConfig job = Job(3, 3);
  job.federation.min_silos = 3;
  job.federation.round_retries = 2;
  job.federation.wait_for_silos = 1;
  change(job);
  Fixture f;
  for (int i = 0; i < 3; ++i) f.Add(i, 1 + i);
  f.silos[1]->fail_round = 2;
  f.silos[1]->fail_times = 1;
  f.silos[1]->gone_after_failure = gone;
  FakeSilo* second = f.silos[1];
  auto strategy = strategy::CreateStrategy(job.strategy, 3);
  if (!strategy.ok()) return strategy.status();
  SumEvaluator eval;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::move(strategy).value(), &eval,
                 nullptr);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  *calls = second->calls;
  return result;
}

// SCAFFOLD's silos have moved their control variates by the time a round
// fails; under local DP every attempt is charged to the silos' budgets.
TEST(OrchestratorTest, RoundRetriesDoNotApplyToScaffoldNorUnderLocalDp) {
  std::vector<int> calls;
  // The control: with FedAvg the failed round runs again and the job ends.
  StatusOr<RunResult> retried = RunWithOneFailure([](JobConfig&) {}, &calls);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(calls, (std::vector<int>{1, 2, 2, 3}));

  StatusOr<RunResult> scaffold =
      RunWithOneFailure([](JobConfig& job) { job.strategy.name = "scaffold"; }, &calls);
  ASSERT_FALSE(scaffold.ok());
  EXPECT_THAT(scaffold.status().message(), HasSubstr("round 2: only 2 of 3"));
  EXPECT_THAT(scaffold.status().message(), HasSubstr("s2: connection lost"));
  EXPECT_EQ(calls, (std::vector<int>{1, 2}));

  StatusOr<RunResult> local_dp = RunWithOneFailure(
      [](JobConfig& job) {
        job.privacy.dp.mode = DpMode::kLocal;
        job.privacy.dp.noise_multiplier = 1.0;
      },
      &calls);
  ASSERT_FALSE(local_dp.ok());
  EXPECT_THAT(local_dp.status().message(), HasSubstr("round 2: only 2 of 3"));
  EXPECT_THAT(local_dp.status().message(), HasSubstr("s2: connection lost"));
  EXPECT_EQ(calls, (std::vector<int>{1, 2}));
}

TEST(OrchestratorTest, ASiloNotBackWithinWaitForSilosFailsTheJobNamingIt) {
  // s2 fails once and stays away: with retries to spare the round is not
  // run again without it (retried, it would succeed: it fails only once).
  std::vector<int> calls;
  const auto start = std::chrono::steady_clock::now();
  StatusOr<RunResult> result = RunWithOneFailure([](JobConfig&) {}, &calls, /*gone=*/true);
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("round 2: only 2 of 3"));
  EXPECT_THAT(result.status().message(), HasSubstr("s2: connection lost"));
  EXPECT_EQ(calls, (std::vector<int>{1, 2}));
  // It was waited for, for federation.wait_for_silos (1 s).
  EXPECT_GE(waited, std::chrono::seconds(1));
}

TEST(OrchestratorTest, AtMostTwoUpdatesAreInTheOrchestratorAtOnce) {
  // Every reply is in before the first is folded (later silos answer first),
  // so an orchestrator that fetched eagerly could hold them all.
  constexpr int kSilos = 5;
  JobConfig job = Job(kSilos, 1);
  Fixture f;
  Transfers transfers;
  ReplyOrder order;
  for (int i = 0; i < kSilos; ++i) {
    f.Add(i, 1 + i);
    f.silos[i]->transfers = &transfers;
    f.silos[i]->ReplyAt(&order, kSilos - 1 - i);
  }
  SumEvaluator eval;
  Orchestrator o(job, {"run", kSilos}, std::move(f.connections),
                 std::make_unique<strategy::FedAvg>(), &eval, nullptr);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  // The weighted mean of (i + 1) with weights (i + 1): 55 / 15.
  for (const Tensor& t : result->final_model.tensors()) {
    for (float v : t.floats()) EXPECT_FLOAT_EQ(v, 55.0f / 15.0f);
  }
  EXPECT_EQ(transfers.max_in_orchestrator(), 2);
  // ... and the next one travelled while each was checked and folded: each
  // fold starts the transfer of the next reply that has arrived. The last
  // silo to answer is the first folded; the reply before it may still be on
  // its way into the orchestrator's queue (between the silo's answer and its
  // worker's hand-over) on a loaded machine, so that one fold may find no
  // next reply yet: three or four of the four.
  EXPECT_GE(transfers.prefetched_ahead(), kSilos - 2);
  EXPECT_LE(transfers.prefetched_ahead(), kSilos - 1);
}

JobConfig SecureJob(int silos, int rounds, int threshold) {
  JobConfig job = Job(silos, rounds);
  job.privacy.secure_aggregation.enabled = true;
  job.privacy.secure_aggregation.threshold = threshold;
  job.privacy.secure_aggregation.max_weight = 10;
  job.privacy.secure_aggregation.clip_range = 8;  // updates go up to 6
  return job;
}

TEST(OrchestratorTest, SecureAggregationAppliesTheWeightedMeanWithoutSeeingAnUpdate) {
  JobConfig job = SecureJob(3, 2, 2);
  Fixture f;
  f.Add(0, 1);
  f.Add(1, 2);
  f.Add(2, 5);
  SumEvaluator eval;
  RecordingSink sink;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, &sink);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  // As in the plain test: 2.5 after round 1, 7.5 after round 2, within the
  // fixed-point error (recorded each round).
  double error = 0;
  std::set<std::string> names;
  for (const auto& r : sink.records) {
    names.insert(r.name);
    if (r.name == "global/secagg_quantization_error") error += r.value;
  }
  EXPECT_GT(error, 0);
  for (float v : result->final_model.tensors()[0].floats()) EXPECT_NEAR(v, 7.5, error + 1e-6);
  EXPECT_EQ(names.count("s1/train_loss"), 1u);
  EXPECT_EQ(names.count("global/secagg_clipped_values"), 1u);
  EXPECT_EQ(names.count("s3/num_examples"), 0u);  // masked, never seen
}

TEST(OrchestratorTest, SecureAggregationRecoversTheSumWhenSilosLeaveMidRound) {
  JobConfig job = SecureJob(5, 1, 3);
  Fixture f;
  for (int i = 0; i < 5; ++i) f.Add(i, 2);
  f.silos[1]->leave_at_stage = 3;  // shared its keys, never sent its masked input
  f.silos[3]->leave_at_stage = 4;  // sent its masked input, gone before unmasking
  RecordingSink sink;
  SumEvaluator eval;
  struct Summaries : RoundObserver {
    Status OnRoundEnd(const RoundSummary& s, const ModelState&, int) override {
      summaries.push_back(s);
      return absl::OkStatus();
    }
    std::vector<RoundSummary> summaries;
  } observer;
  Orchestrator o(job, {"run", 3}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, &sink);
  StatusOr<RunResult> result = o.Run(Global(), &observer);
  ASSERT_TRUE(result.ok()) << result.status();
  // Updates 1..5 with equal weights; silo 2's is left out: (1 + 3 + 4 + 5) / 4.
  for (float v : result->final_model.tensors()[0].floats()) EXPECT_NEAR(v, 3.25, 1e-5);
  ASSERT_EQ(observer.summaries.size(), 1u);
  EXPECT_EQ(observer.summaries[0].silos_succeeded, 4);
  EXPECT_THAT(observer.summaries[0].failures, testing::Contains(HasSubstr("s2: connection lost")));
}

TEST(OrchestratorTest, SecureAggregationBelowTheThresholdFailsTheRoundAndAppliesNothing) {
  JobConfig job = SecureJob(3, 2, 3);
  Fixture f;
  for (int i = 0; i < 3; ++i) f.Add(i, 2);
  f.silos[2]->leave_at_stage = 3;
  SumEvaluator eval;
  RoundsEnded ended;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  StatusOr<RunResult> result = o.Run(Global(), &ended);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("round 1"));
  EXPECT_THAT(result.status().message(), HasSubstr("below the threshold of 3 (missing: s3)"));
  EXPECT_TRUE(ended.rounds.empty()) << "a round ended with a partial sum";
}

TEST(OrchestratorTest, SecureAggregationWithCentralDpClipsInTheSilos) {
  JobConfig job = SecureJob(3, 1, 2);
  job.privacy.dp.mode = DpMode::kCentral;
  job.privacy.dp.noise_multiplier = 1e-9;
  job.privacy.dp.clip_norm = 0.3;
  Fixture f;
  f.Add(0, 1);
  f.Add(1, 100);
  f.Add(2, 5);
  SumEvaluator eval;
  Orchestrator o(job, {"run", 2}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const Tensor& t : result->final_model.tensors()) {
    for (float v : t.floats()) EXPECT_NEAR(v, 0.3 / std::sqrt(6.0), 1e-5);
  }
}

// strategy.max_update_norm clips every update before it is folded.
TEST(OrchestratorTest, UpdateNormBoundClipsEveryUpdate) {
  JobConfig job = Job(2, 1);
  job.strategy.max_update_norm = std::sqrt(6.0);  // a norm of 1 per coordinate over 6 values
  Fixture f;
  f.Add(0, 1);  // update 1 everywhere: norm sqrt(6), kept
  f.Add(1, 1);  // update 2 everywhere: norm 2 sqrt(6), halved to 1
  SumEvaluator eval;
  Orchestrator o(job, {"run", 1}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  StatusOr<RunResult> result = o.Run(Global(), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const Tensor& t : result->final_model.tensors()) {
    for (float v : t.floats()) EXPECT_FLOAT_EQ(v, 1.0f);  // not (1 + 2) / 2
  }
}

// With SCAFFOLD the bound applies to the model update, not to Δc.
TEST(OrchestratorTest, UpdateNormBoundLeavesScaffoldsControlVariateAlone) {
  JobConfig job = Job(2, 1);
  job.strategy.name = "scaffold";
  job.strategy.max_update_norm = std::sqrt(6.0);
  Fixture f;
  f.Add(0, 1);  // 1 everywhere, Δc included: the model part has norm sqrt(6)
  f.Add(1, 1);  // 2 everywhere: the model part is halved, Δc stays 2
  SumEvaluator eval;
  struct LastState : RoundObserver {
    Status OnRoundEnd(const RoundSummary& s, const ModelState&, int) override {
      state = s.strategy_state;
      return absl::OkStatus();
    }
    ModelState state;
  } observer;
  auto scaffold = strategy::CreateStrategy(job.strategy, 2);
  ASSERT_TRUE(scaffold.ok());
  Orchestrator o(job, {"run", 1}, std::move(f.connections), std::move(scaffold).value(), &eval,
                 nullptr);
  StatusOr<RunResult> result = o.Run(Global(), &observer);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const Tensor& t : result->final_model.tensors()) {
    for (float v : t.floats()) EXPECT_FLOAT_EQ(v, 1.0f);
  }
  // c = (1 + 2) / N with N = 2 silos.
  for (const Tensor& t : observer.state.tensors()) {
    for (float v : t.floats()) EXPECT_FLOAT_EQ(v, 1.5f);
  }
}

TEST(OrchestratorTest, SamplesAFractionDeterministically) {
  JobConfig job = Job(10, 3);
  job.federation.fraction = 0.3;
  job.federation.min_silos = 2;
  Fixture f;
  for (int i = 0; i < 10; ++i) f.Add(i, 1);
  SumEvaluator eval;
  Orchestrator o(job, {"run", 1}, std::move(f.connections), std::make_unique<strategy::FedAvg>(),
                 &eval, nullptr);
  std::set<std::vector<size_t>> distinct;
  for (int round = 1; round <= 20; ++round) {
    std::vector<size_t> s = o.SampleSilos(round);
    EXPECT_EQ(s.size(), 3u);
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
    EXPECT_EQ(s, o.SampleSilos(round));
    distinct.insert(s);
  }
  EXPECT_GT(distinct.size(), 10u);
  ASSERT_TRUE(o.Run(Global(), nullptr).ok());
  int calls = 0;
  for (FakeSilo* s : f.silos) calls += static_cast<int>(s->calls.size());
  EXPECT_EQ(calls, 9);  // 3 silos in each of 3 rounds
}

}  // namespace
}  // namespace fedsilo::orchestrator
