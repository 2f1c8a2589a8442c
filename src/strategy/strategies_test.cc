// Server optimizers and robust aggregation against hand-computed results on
// one- and two-value models, including the state kept across rounds.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <utility>
#include <vector>

#include "core/control_variates.h"
#include "strategy/robust.h"
#include "strategy/scaffold.h"
#include "strategy/server_optimizer.h"
#include "strategy/strategy.h"

namespace fedsilo::strategy {
namespace {

using ::testing::HasSubstr;

ModelState Values(std::vector<float> w) {
  ModelState s;
  EXPECT_TRUE(s.Add(Tensor::FromFloats("w", {static_cast<int64_t>(w.size())}, w)).ok());
  return s;
}

float W(const ModelState& s, size_t i = 0) { return s.Find("w")->floats()[i]; }

// One round: updates with equal weights; returns the new global.
ModelState Round(Strategy& s, const ModelState& global,
                 const std::vector<std::vector<float>>& ups) {
  EXPECT_TRUE(s.BeginRound(global).ok());
  for (const auto& u : ups) EXPECT_TRUE(s.Accumulate(Values(u), 1.0).ok());
  StatusOr<ModelState> next = s.Finish();
  EXPECT_TRUE(next.ok()) << next.status();
  s.TakeFolded();
  return next.ok() ? *next : ModelState();
}

StrategyConfig Config(const std::string& name) {
  StrategyConfig c;
  c.name = name;
  c.server_learning_rate = 1.0;
  c.server_momentum = 0.5;
  c.beta1 = 0.9;
  c.beta2 = 0.99;
  c.tau = 0.1;
  c.byzantine = 1;
  return c;
}

TEST(ServerOptimizerTest, FedAvgMKeepsAVelocity) {
  ServerOptimizer opt(ServerOptimizer::Kind::kMomentum, Config("fedavgm"));
  // Round 1: mean update (1 + 3) / 2 = 2; v = 2; x = 0 + 2.
  ModelState x = Round(opt, Values({0}), {{1}, {3}});
  EXPECT_FLOAT_EQ(W(x), 2);
  // Round 2: mean 1; v = 0.5 * 2 + 1 = 2; x = 2 + 2 = 4.
  x = Round(opt, x, {{1}, {1}});
  EXPECT_FLOAT_EQ(W(x), 4);
}

TEST(ServerOptimizerTest, FedAdamFedYogiFedAdagradFirstAndSecondRounds) {
  // Δ = 1 in round 1 and Δ = -1 in round 2; v starts at tau² = 0.01.
  // m1 = 0.1; m2 = 0.9 * 0.1 - 0.1 = -0.01.
  struct Case {
    ServerOptimizer::Kind kind;
    const char* name;
    double v1, v2;
  };
  const Case cases[] = {
      // Adam: v1 = 0.99 * 0.01 + 0.01 * 1 = 0.0199; v2 = 0.99 * 0.0199 + 0.01 = 0.029701.
      {ServerOptimizer::Kind::kAdam, "fedadam", 0.0199, 0.029701},
      // Yogi: v1 = 0.01 - 0.01 * 1 * sign(0.01 - 1) = 0.02; v2 = 0.02 + 0.01 = 0.03.
      {ServerOptimizer::Kind::kYogi, "fedyogi", 0.02, 0.03},
      // Adagrad: v1 = 0.01 + 1 = 1.01; v2 = 2.01.
      {ServerOptimizer::Kind::kAdagrad, "fedadagrad", 1.01, 2.01},
  };
  for (const Case& c : cases) {
    ServerOptimizer opt(c.kind, Config(c.name));
    ModelState x = Round(opt, Values({0}), {{1}});
    const double x1 = 0.1 / (std::sqrt(c.v1) + 0.1);
    EXPECT_NEAR(W(x), x1, 1e-6) << c.name;
    // The state carries the moments into a fresh instance (a resumed job).
    ServerOptimizer resumed(c.kind, Config(c.name));
    ASSERT_TRUE(resumed.RestoreState(opt.State()).ok()) << c.name;
    ModelState via_resume = Round(resumed, x, {{static_cast<float>(-1)}});
    x = Round(opt, x, {{-1}});
    const double x2 = x1 + -0.01 / (std::sqrt(c.v2) + 0.1);
    EXPECT_NEAR(W(x), x2, 1e-6) << c.name;
    EXPECT_EQ(W(via_resume), W(x)) << c.name;
  }
}

TEST(ServerOptimizerTest, ForeignStateIsRefused) {
  ServerOptimizer opt(ServerOptimizer::Kind::kAdam, Config("fedadam"));
  EXPECT_THAT(std::string(opt.RestoreState(Values({1})).message()),
              HasSubstr("unexpected tensor 'w'"));
}

TEST(RobustAggregatorTest, MedianAndTrimmedMean) {
  RobustAggregator median(RobustAggregator::Kind::kMedian, Config("median"));
  // Odd count: the middle value; even: the mean of the two middle ones.
  EXPECT_FLOAT_EQ(W(Round(median, Values({10, 10}), {{1, 4}, {100, 2}, {2, 3}})), 12);
  ModelState even = Round(median, Values({0, 0}), {{1, 0}, {2, 0}, {3, 0}, {100, -100}});
  EXPECT_FLOAT_EQ(W(even, 0), 2.5);
  EXPECT_FLOAT_EQ(W(even, 1), 0);

  StrategyConfig c = Config("trimmed_mean");
  c.trim_fraction = 0.25;  // n = 4: one cut from each end
  RobustAggregator trimmed(RobustAggregator::Kind::kTrimmedMean, c);
  EXPECT_FLOAT_EQ(W(Round(trimmed, Values({0}), {{-50}, {1}, {3}, {1000}})), 2);
  c.trim_fraction = 0.2;  // n = 4: floor(0.8) = 0 cut: the plain mean
  RobustAggregator none(RobustAggregator::Kind::kTrimmedMean, c);
  EXPECT_FLOAT_EQ(W(Round(none, Values({0}), {{-50}, {1}, {3}, {1000}})), 238.5);
}

TEST(RobustAggregatorTest, KrumPicksTheMostCentralUpdateAndMultiKrumAveragesTheBest) {
  // Scores (f = 1, n - f - 2 = 2 nearest squared distances):
  //   0: 0.01 + 0.0225 = 0.0325; 0.1: 0.0025 + 0.01 = 0.0125; 0.2: 0.0025 + 0.01 = 0.0125;
  //   0.15: 0.0025 + 0.0025 = 0.005 (best); 100: huge.
  const std::vector<std::vector<float>> ups = {{0}, {0.1f}, {0.2f}, {0.15f}, {100}};
  RobustAggregator krum(RobustAggregator::Kind::kKrum, Config("krum"));
  EXPECT_FLOAT_EQ(W(Round(krum, Values({1}), ups)), 1.15f);
  EXPECT_EQ(krum.last_selected(), (std::vector<size_t>{3}));
  RobustAggregator multi(RobustAggregator::Kind::kMultiKrum, Config("multi_krum"));
  // Keeps n - f = 4: all but the outlier, mean 0.1125.
  EXPECT_FLOAT_EQ(W(Round(multi, Values({0}), ups)), 0.1125f);
  EXPECT_EQ(multi.last_selected(), (std::vector<size_t>{0, 1, 2, 3}));
}

// An example count is what a hostile silo could lie about: robust rules give
// every silo one vote. The same updates with counts 1 or 10^6 (the largest on
// an outlier) give the same model, bit for bit.
TEST(RobustAggregatorTest, EverySiloWeighsTheSameWhateverItsExampleCount) {
  const std::vector<std::vector<float>> ups = {
      {0.1f, -0.3f, 2.0f}, {0.4f, 0.2f, -1.0f}, {0.25f, 0.0f, 0.5f},
      {0.3f, -0.1f, 0.7f}, {50.0f, 40.0f, -60.0f}};
  const std::vector<double> equal = {1, 1, 1, 1, 1};
  const std::vector<double> lying = {1, 3, 1e6, 7, 1e6};
  auto run = [&](Strategy& s, const std::vector<double>& weights) {
    EXPECT_TRUE(s.BeginRound(Values({1, 1, 1})).ok());
    for (size_t i = 0; i < ups.size(); ++i) {
      EXPECT_TRUE(s.Accumulate(Values(ups[i]), weights[i]).ok());
    }
    StatusOr<ModelState> next = s.Finish();
    EXPECT_TRUE(next.ok()) << next.status();
    s.TakeFolded();
    const auto w = next->Find("w")->floats();
    return std::vector<float>(w.begin(), w.end());
  };
  StrategyConfig trimmed = Config("trimmed_mean");
  trimmed.trim_fraction = 0.2;  // n = 5: one cut from each end
  const std::vector<std::pair<RobustAggregator::Kind, StrategyConfig>> rules = {
      {RobustAggregator::Kind::kMedian, Config("median")},
      {RobustAggregator::Kind::kTrimmedMean, trimmed},
      {RobustAggregator::Kind::kKrum, Config("krum")},
      {RobustAggregator::Kind::kMultiKrum, Config("multi_krum")}};
  for (const auto& [kind, config] : rules) {
    RobustAggregator a(kind, config), b(kind, config);
    const std::vector<float> by_silo = run(a, equal);
    EXPECT_EQ(run(b, lying), by_silo) << config.name;
    // Not the weighted answer: the outlier's million examples would pull it.
    EXPECT_LT(std::fabs(by_silo[0] - 1), 1.0f) << config.name;
  }
  // The control: the same weights do move FedAvg, so the test can tell.
  auto fedavg = CreateStrategy(Config("fedavg"), 5);
  ASSERT_TRUE(fedavg.ok());
  auto fedavg_again = CreateStrategy(Config("fedavg"), 5);
  EXPECT_NE(run(**fedavg, equal), run(**fedavg_again, lying));
}

TEST(RobustAggregatorTest, KrumWithTooFewUpdatesIsAClearError) {
  RobustAggregator krum(RobustAggregator::Kind::kKrum, Config("krum"));
  ASSERT_TRUE(krum.BeginRound(Values({0})).ok());
  for (float v : {1.f, 2.f, 3.f, 4.f}) ASSERT_TRUE(krum.Accumulate(Values({v}), 1).ok());
  StatusOr<ModelState> next = krum.Finish();
  ASSERT_FALSE(next.ok());
  EXPECT_THAT(std::string(next.status().message()),
              HasSubstr("krum: needs more than 2 x byzantine + 2 = 4 updates, got 4"));
}

TEST(ScaffoldTest, ServerControlVariateMovesBySumOfDeltasOverAllSilos) {
  StrategyConfig c = Config("scaffold");
  Scaffold scaffold(c, /*total_silos=*/4);
  ModelState global = Values({1});
  // Round 1: c = 0 goes out with the model.
  ModelState sent = scaffold.Broadcast(global);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent.tensors()[1].name(), "control/w");
  EXPECT_EQ(sent.tensors()[1].floats()[0], 0);
  ASSERT_TRUE(scaffold.BeginRound(global).ok());
  auto with_control = [](float update, float delta_c) {
    ModelState u = Values({update});
    EXPECT_TRUE(AppendControl(u, Values({delta_c})).ok());
    return u;
  };
  ASSERT_TRUE(scaffold.Accumulate(with_control(2, 0.4f), 1).ok());   // weight 1
  ASSERT_TRUE(scaffold.Accumulate(with_control(-1, 0.8f), 3).ok());  // weight 3
  StatusOr<ModelState> next = scaffold.Finish();
  ASSERT_TRUE(next.ok()) << next.status();
  // x = 1 + (1 * 2 + 3 * -1) / 4 = 0.75; c = 0 + (0.4 + 0.8) / 4 = 0.3.
  EXPECT_FLOAT_EQ(W(*next), 0.75f);
  EXPECT_EQ(next->size(), 1u);
  EXPECT_FLOAT_EQ(W(scaffold.State()), 0.3f);
  EXPECT_FLOAT_EQ(scaffold.Broadcast(*next).tensors()[1].floats()[0], 0.3f);
  // The state carries c into a resumed job.
  Scaffold resumed(c, 4);
  ASSERT_TRUE(resumed.RestoreState(scaffold.State()).ok());
  ASSERT_TRUE(resumed.BeginRound(*next).ok());
  EXPECT_FLOAT_EQ(resumed.Broadcast(*next).tensors()[1].floats()[0], 0.3f);
  // An update without its control part is refused.
  EXPECT_FALSE(resumed.Accumulate(Values({1}), 1).ok());
}

// The registry makes a strategy for every name a job may give, and for no
// other: the job's rules and the silos read the same list's traits.
TEST(CreateStrategyTest, TheRegistryHoldsExactlyTheStrategiesJobsMayName) {
  std::vector<absl::string_view> listed;
  for (const StrategyTraits& s : kStrategies) listed.push_back(s.name);
  std::vector<absl::string_view> registered = RegisteredStrategies();
  std::sort(listed.begin(), listed.end());
  std::sort(registered.begin(), registered.end());
  EXPECT_EQ(registered, listed);
  StrategyConfig unknown;
  unknown.name = "fedsgd";
  EXPECT_EQ(CreateStrategy(unknown).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FindStrategy("fedsgd"), nullptr);
  EXPECT_EQ(&TraitsOf(unknown), &kStrategies[0]);
}

TEST(CreateStrategyTest, EveryNameBuildsItsStrategy) {
  for (const StrategyTraits& traits : kStrategies) {
    const absl::string_view name = traits.name;
    StrategyConfig c;
    c.name = std::string(name);
    c.byzantine = 1;
    StatusOr<std::unique_ptr<Strategy>> s = CreateStrategy(c);
    ASSERT_TRUE(s.ok()) << name;
    EXPECT_EQ((*s)->name(), name == "fedprox" ? "fedavg" : std::string(name));
  }
}

}  // namespace
}  // namespace fedsilo::strategy
