#include "ml/metrics.h"

#include <gtest/gtest.h>

namespace fedsilo::ml {
namespace {

TEST(RocAucTest, KnownValues) {
  EXPECT_DOUBLE_EQ(RocAuc({0.1f, 0.2f, 0.8f, 0.9f}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(RocAuc({0.9f, 0.8f, 0.2f, 0.1f}, {0, 0, 1, 1}), 0.0);
  EXPECT_DOUBLE_EQ(RocAuc({0.5f, 0.5f, 0.5f, 0.5f}, {0, 1, 0, 1}), 0.5);
  // Positives at 0.35, 0.8; negatives at 0.1, 0.4: pairs won 1 + 2 = 3 of 4.
  EXPECT_DOUBLE_EQ(RocAuc({0.1f, 0.4f, 0.35f, 0.8f}, {0, 0, 1, 1}), 0.75);
  // A tie between a positive and a negative counts one half: (1 + 0.5) / 2.
  EXPECT_DOUBLE_EQ(RocAuc({0.1f, 0.5f, 0.5f}, {0, 0, 1}), 0.75);
  EXPECT_DOUBLE_EQ(RocAuc({0.3f, 0.6f}, {1, 1}), 0.5);  // one class only
}

TEST(ClassificationMetricsTest, PrecisionRecallAccuracy) {
  // labels:    1 1 1 0 0 0
  // predicted: 1 0 1 1 0 0  -> tp 2, fn 1, fp 1, tn 2
  ClassificationMetrics m = ComputeClassificationMetrics(
      0.4, {1, 1, 1, 0, 0, 0}, {1, 0, 1, 1, 0, 0}, {0.9f, 0.4f, 0.8f, 0.7f, 0.2f, 0.1f});
  EXPECT_TRUE(m.binary);
  EXPECT_EQ(m.examples, 6);
  EXPECT_DOUBLE_EQ(m.loss, 0.4);
  EXPECT_DOUBLE_EQ(m.accuracy, 4.0 / 6);
  EXPECT_DOUBLE_EQ(m.precision, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.recall, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.auc, 8.0 / 9);
  EXPECT_EQ(m.ToMap().size(), 5u);
}

TEST(ClassificationMetricsTest, MulticlassHasNoBinaryMetrics) {
  ClassificationMetrics m = ComputeClassificationMetrics(1.0, {0, 2, 1}, {0, 2, 2}, {});
  EXPECT_FALSE(m.binary);
  EXPECT_DOUBLE_EQ(m.accuracy, 2.0 / 3);
  EXPECT_EQ(m.ToMap().count("auc"), 0u);
  EXPECT_EQ(m.ToMap().size(), 2u);
}

TEST(ClassificationMetricsTest, NoPredictedPositivesGivesZeroPrecision) {
  ClassificationMetrics m = ComputeClassificationMetrics(0, {1, 0}, {0, 0}, {0.1f, 0.2f});
  EXPECT_DOUBLE_EQ(m.precision, 0);
  EXPECT_DOUBLE_EQ(m.recall, 0);
}

}  // namespace
}  // namespace fedsilo::ml
