#include "core/score_histogram.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

namespace fedsilo {
namespace {

// Exact ROC AUC by counting pairs: ties count one half.
double PairAuc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  double pairs = 0, p = 0, n = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!positive[i]) continue;
    ++p;
    for (size_t j = 0; j < scores.size(); ++j) {
      if (positive[j]) continue;
      pairs += scores[i] > scores[j] ? 1.0 : scores[i] == scores[j] ? 0.5 : 0.0;
    }
  }
  for (bool b : positive) n += !b;
  return pairs / (p * n);
}

// Three silos' histograms, added, give the AUC of all their scores pooled.
TEST(ScoreHistogramTest, SilosHistogramsAddUpToThePooledAuc) {
  std::mt19937_64 rng(3);
  std::vector<double> all;
  std::vector<bool> labels;
  ScoreHistogram total;
  for (int silo = 0; silo < 3; ++silo) {
    ScoreHistogram h;
    std::normal_distribution<double> negative(-4.0 + silo, 2.0), positive(1.0 - silo, 2.5);
    for (int i = 0; i < 700; ++i) {
      const bool is_positive = i % (7 + silo) == 0;
      const double s = is_positive ? positive(rng) : negative(rng);
      h.Add(s, is_positive);
      all.push_back(s);
      labels.push_back(is_positive);
    }
    StatusOr<ScoreHistogram> sent = ScoreHistogram::FromState(h.ToState(), "silo");
    ASSERT_TRUE(sent.ok()) << sent.status();
    total.Merge(*sent);
  }
  const double exact = PairAuc(all, labels);
  EXPECT_GT(exact, 0.7);
  EXPECT_LT(exact, 0.99);
  EXPECT_NEAR(total.Auc(), exact, 1e-3);
}

TEST(ScoreHistogramTest, EdgesAndBadInput) {
  ScoreHistogram h;
  EXPECT_EQ(h.Auc(), 0.5);  // no examples
  h.Add(100, true);         // clamped into the top bin
  h.Add(-100, false);
  EXPECT_EQ(h.Auc(), 1.0);
  h.Add(-100, true);  // a tie with the negative
  EXPECT_EQ(h.Auc(), 0.75);
  EXPECT_FALSE(ScoreHistogram::FromState(ModelState(), "silo 'x'").ok());
  ModelState wrong;
  ASSERT_TRUE(wrong.Add(Tensor("score_histogram", DType::kFloat64, {2, 10})).ok());
  EXPECT_THAT(ScoreHistogram::FromState(wrong, "silo 'x'").status().message(),
              ::testing::HasSubstr("silo 'x': not a score histogram"));
  ModelState negative = h.ToState();
  reinterpret_cast<double*>(negative.mutable_tensors()[0].data())[5] = -1;
  EXPECT_FALSE(ScoreHistogram::FromState(negative, "silo 'x'").ok());
}

}  // namespace
}  // namespace fedsilo
