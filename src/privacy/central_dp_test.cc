#include "privacy/central_dp.h"

#include <gtest/gtest.h>

#include <cmath>

#include "privacy/rdp_accountant.h"

namespace fedsilo::privacy {
namespace {

ModelState Constant(int n, float value) {
  ModelState s;
  std::vector<float> v(static_cast<size_t>(n), value);
  (void)s.Add(Tensor::FromFloats("w", {n}, v));
  return s;
}

double Norm(const ModelState& s) {
  double n2 = 0;
  for (const Tensor& t : s.tensors()) {
    for (float v : t.floats()) n2 += static_cast<double>(v) * v;
  }
  return std::sqrt(n2);
}

DpConfig Central(double z, double clip) {
  DpConfig c;
  c.mode = DpMode::kCentral;
  c.noise_multiplier = z;
  c.clip_norm = clip;
  return c;
}

TEST(CentralDpTest, ClipsLongUpdatesToTheBoundAndLeavesShortOnes) {
  CentralDp dp(Central(1.0, 2.0), 10, 1.0);
  ModelState long_update = Constant(100, 1.0f);  // norm 10
  EXPECT_NEAR(dp.Clip(long_update), 10.0, 1e-9);
  EXPECT_NEAR(Norm(long_update), 2.0, 1e-5);
  EXPECT_FLOAT_EQ(long_update.tensors()[0].floats()[7], 0.2f);  // direction kept
  ModelState short_update = Constant(4, 0.5f);                  // norm 1
  dp.Clip(short_update);
  EXPECT_FLOAT_EQ(short_update.tensors()[0].floats()[0], 0.5f);
}

// The noise on the mean of m updates has standard deviation z S / m per
// coordinate (measured over many coordinates).
TEST(CentralDpTest, NoiseOnTheMeanIsCalibratedToTheBoundAndTheSilos) {
  CentralDp dp(Central(1.5, 2.0), 10, 1.0);
  dp.BeginRound();
  ModelState mean = Constant(200000, 0.0f);
  dp.Noise(mean, 10);
  double sum = 0, sum2 = 0;
  for (float v : mean.tensors()[0].floats()) {
    sum += v;
    sum2 += static_cast<double>(v) * v;
  }
  const double n = 200000;
  const double stddev = std::sqrt(sum2 / n - (sum / n) * (sum / n));
  // The noise is the OS's, so the bounds are set for false alarms: 6.3 and
  // 7.4 standard errors (0.3 / sqrt(2n) for the deviation, 0.3 / sqrt(n) for
  // the mean), each failing by chance less than once in 1e9 runs.
  EXPECT_NEAR(stddev, 1.5 * 2.0 / 10, 0.01 * 0.3);
  EXPECT_NEAR(sum / n, 0.0, 0.005);
  // A second run draws other noise: the orchestrator's OS randomness.
  CentralDp other(Central(1.5, 2.0), 10, 1.0);
  ModelState again = Constant(10, 0.0f);
  ModelState first = Constant(10, 0.0f);
  other.Noise(again, 10);
  dp.Noise(first, 10);
  EXPECT_NE(again.tensors()[0].floats()[0], first.tensors()[0].floats()[0]);
}

// Adaptive clipping moves S toward the target quantile of the update norms:
// with every update far longer than S it grows, with every update far shorter
// it shrinks.
TEST(CentralDpTest, AdaptiveClippingFollowsTheQuantile) {
  DpConfig c = Central(1.0, 1.0);
  c.adaptive_clipping = true;
  c.target_quantile = 0.5;
  CentralDp grow(c, 100, 1.0), shrink(c, 100, 1.0);
  // Noise on the count is m / 20 = 5 silos: small against 100.
  for (int round = 0; round < 10; ++round) {
    grow.BeginRound();
    shrink.BeginRound();
    for (int i = 0; i < 100; ++i) {
      ModelState big = Constant(4, 1000.0f), tiny = Constant(4, 1e-6f);
      grow.Clip(big);
      shrink.Clip(tiny);
    }
    ModelState m1 = Constant(1, 0), m2 = Constant(1, 0);
    grow.Noise(m1, 100);
    shrink.Noise(m2, 100);
  }
  EXPECT_GT(grow.clip_norm(), 2.0);    // exp(0.2 * 0.5 * 10) ~ 2.7
  EXPECT_LT(shrink.clip_norm(), 0.5);  // exp(-0.2 * 0.5 * 10) ~ 0.37
  // The count's privacy is paid for with more noise on the updates:
  // (1 - (2 x 5)^-2)^-1/2.
  EXPECT_NEAR(grow.update_noise_multiplier(), 1.0 / std::sqrt(1.0 - 0.01), 1e-12);
}

TEST(CentralDpTest, AdaptiveClippingNeedsEnoughSilosForItsCountNoise) {
  DpConfig c = Central(1.0, 1.0);
  c.adaptive_clipping = true;
  CentralDp few(c, 5, 1.0);  // 2 sigma_b = 0.5 < z
  Status s = few.Check();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("privacy.dp.adaptive_clipping"), absl::string_view::npos);
  EXPECT_TRUE(CentralDp(c, 100, 1.0).Check().ok());  // 2 sigma_b = 10
}

TEST(CentralDpTest, EpsilonIsTheSampledGaussianOverRounds) {
  CentralDp dp(Central(1.2, 1.0), 10, 0.1);
  auto eps = dp.Epsilon(50);
  ASSERT_TRUE(eps.ok());
  EXPECT_DOUBLE_EQ(*eps, ComputeEpsilon(0.1, 1.2, 50, 1e-5)->epsilon);
  EXPECT_LT(*dp.Epsilon(10), *eps);
}

}  // namespace
}  // namespace fedsilo::privacy
