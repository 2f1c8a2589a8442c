#include "strategy/fed_avg.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fedsilo::strategy {
namespace {

using ::testing::HasSubstr;

ModelState State(std::vector<float> w, std::vector<float> b) {
  ModelState s;
  EXPECT_TRUE(s.Add(Tensor::FromFloats("w", {static_cast<int64_t>(w.size())}, w)).ok());
  EXPECT_TRUE(s.Add(Tensor::FromFloats("b", {static_cast<int64_t>(b.size())}, b)).ok());
  return s;
}

// Global (1, 2 | 3); updates weighted 1, 2, 5 (example counts).
// Weighted mean of w[0]: (1*1 + 2*4 + 5*(-2)) / 8 = -1/8; w[1]: (0 + 2*2 + 5*8) / 8 = 5.5;
// b: (1*2 + 2*(-2) + 5*0.4) / 8 = 0.
struct Round {
  ModelState global = State({1, 2}, {3});
  std::vector<std::pair<ModelState, double>> updates;
  Round() {
    updates.emplace_back(State({1, 0}, {2}), 1);
    updates.emplace_back(State({4, 2}, {-2}), 2);
    updates.emplace_back(State({-2, 8}, {0.4f}), 5);
  }
};

class FedAvgTest : public ::testing::TestWithParam<int> {};  // fold batch

TEST_P(FedAvgTest, MatchesHandComputedWeightedMean) {
  FedAvg avg(1.0, GetParam());
  Round r;
  ASSERT_TRUE(avg.BeginRound(r.global).ok());
  for (auto& [u, weight] : r.updates) ASSERT_TRUE(avg.Accumulate(u, weight).ok());
  StatusOr<ModelState> next = avg.Finish();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_FLOAT_EQ(next->Find("w")->floats()[0], 1 - 1.0f / 8);
  EXPECT_FLOAT_EQ(next->Find("w")->floats()[1], 2 + 5.5f);
  EXPECT_NEAR(next->Find("b")->floats()[0], 3.0f, 1e-6);
}

TEST_P(FedAvgTest, ServerLearningRateScalesTheStep) {
  FedAvg avg(0.5, GetParam());
  Round r;
  ASSERT_TRUE(avg.BeginRound(r.global).ok());
  for (auto& [u, weight] : r.updates) ASSERT_TRUE(avg.Accumulate(u, weight).ok());
  StatusOr<ModelState> next = avg.Finish();
  ASSERT_TRUE(next.ok());
  EXPECT_FLOAT_EQ(next->Find("w")->floats()[0], 1 - 0.5f / 8);
  EXPECT_FLOAT_EQ(next->Find("w")->floats()[1], 2 + 0.5f * 5.5f);
}

TEST_P(FedAvgTest, SecondRoundStartsFresh) {
  FedAvg avg(1.0, GetParam());
  Round r;
  ASSERT_TRUE(avg.BeginRound(r.global).ok());
  for (auto& [u, weight] : r.updates) ASSERT_TRUE(avg.Accumulate(u, weight).ok());
  ASSERT_TRUE(avg.Finish().ok());
  // Round 2: one update of weight 3 moves the model by exactly that update.
  ASSERT_TRUE(avg.BeginRound(r.global).ok());
  ASSERT_TRUE(avg.Accumulate(State({10, -10}, {1}), 3).ok());
  StatusOr<ModelState> next = avg.Finish();
  ASSERT_TRUE(next.ok());
  EXPECT_FLOAT_EQ(next->Find("w")->floats()[0], 11);
  EXPECT_FLOAT_EQ(next->Find("w")->floats()[1], -8);
  EXPECT_FLOAT_EQ(next->Find("b")->floats()[0], 4);
}

INSTANTIATE_TEST_SUITE_P(FoldBatches, FedAvgTest, ::testing::Values(1, 2, 3, 4, 16));

TEST(FedAvgTest, FinishWithoutUpdatesFails) {
  FedAvg avg;
  ASSERT_TRUE(avg.BeginRound(State({1}, {1})).ok());
  StatusOr<ModelState> next = avg.Finish();
  EXPECT_EQ(next.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(FedAvgTest, RejectsNonPositiveWeightsAndNonFloatModels) {
  FedAvg avg;
  ASSERT_TRUE(avg.BeginRound(State({1}, {1})).ok());
  EXPECT_THAT(avg.Accumulate(State({1}, {1}), 0).message(), HasSubstr("weight must be > 0"));
  ModelState ints;
  ASSERT_TRUE(ints.Add(Tensor("steps", DType::kInt64, {1})).ok());
  EXPECT_THAT(avg.BeginRound(ints).message(), HasSubstr("'steps' is int64"));
}

TEST(FedAvgTest, CreateStrategyByName) {
  StatusOr<std::unique_ptr<Strategy>> s = CreateStrategy({"fedavg", 1.0});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->name(), "fedavg");
  EXPECT_EQ(CreateStrategy({"nope", 1.0}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedsilo::strategy
