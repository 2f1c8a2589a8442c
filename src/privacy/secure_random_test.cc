#include "privacy/secure_random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace fedsilo::privacy {
namespace {

// The standard normal distribution function.
double Phi(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// The distributions are checked on a generator with a fixed key: the checks
// are statistical, and with the OS's key each would fail now and then by
// chance (the Kolmogorov-Smirnov bound once in a thousand runs). What the OS
// key brings -- every generator its own stream -- is checked below.
SecureRandom FixedKey(uint8_t fill) {
  SecureRandom::Key key;
  key.fill(fill);
  return SecureRandom::WithKeyForTesting(key);
}

TEST(SecureRandomTest, GaussiansHaveTheNormalsMomentsAndDistribution) {
  SecureRandom random = FixedKey(7);
  constexpr int kN = 400000;
  std::vector<double> x(kN);
  double sum = 0, sum2 = 0, sum4 = 0;
  for (double& v : x) {
    v = random.Gaussian();
    sum += v;
    sum2 += v * v;
    sum4 += v * v * v * v;
  }
  const double mean = sum / kN, var = sum2 / kN - mean * mean;
  // Standard errors: 1/sqrt(N) for the mean, sqrt(2/N) for the variance.
  EXPECT_NEAR(mean, 0.0, 5 / std::sqrt(kN));
  EXPECT_NEAR(var, 1.0, 5 * std::sqrt(2.0 / kN));
  EXPECT_NEAR(sum4 / kN, 3.0, 5 * std::sqrt(96.0 / kN));  // the kurtosis of a normal
  // Kolmogorov-Smirnov against Phi: the 0.1 % critical value is 1.95 / sqrt(N).
  std::sort(x.begin(), x.end());
  double d = 0;
  for (int i = 0; i < kN; ++i) {
    const double f = Phi(x[i]);
    d = std::max({d, f - static_cast<double>(i) / kN, static_cast<double>(i + 1) / kN - f});
  }
  EXPECT_LT(d, 1.95 / std::sqrt(kN));
  // The tail beyond the ziggurat's base (r = 3.44) is drawn too, at its rate.
  const double beyond = static_cast<double>(std::count_if(
                            x.begin(), x.end(), [](double v) { return std::fabs(v) > 3.5; })) /
                        kN;
  EXPECT_NEAR(beyond, 2 * (1 - Phi(3.5)), 4 * std::sqrt(2 * (1 - Phi(3.5)) / kN));
  EXPECT_GT(x.back(), 3.8);
  EXPECT_LT(x.front(), -3.8);

  std::vector<float> filled(1000);
  random.FillGaussian(filled.data(), filled.size(), 0.0);
  EXPECT_TRUE(std::all_of(filled.begin(), filled.end(), [](float v) { return v == 0; }));
}

TEST(SecureRandomTest, UniformsAndCoinsAreFair) {
  SecureRandom random = FixedKey(9);
  constexpr int kN = 200000;
  double sum = 0;
  int heads = 0;
  for (int i = 0; i < kN; ++i) {
    const double u = random.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    heads += random.Bernoulli(0.05) ? 1 : 0;
  }
  EXPECT_NEAR(sum / kN, 0.5, 5 * std::sqrt(1.0 / 12 / kN));
  EXPECT_NEAR(static_cast<double>(heads) / kN, 0.05, 5 * std::sqrt(0.05 * 0.95 / kN));
  EXPECT_FALSE(random.Bernoulli(0.0));
  EXPECT_TRUE(random.Bernoulli(1.0));
}

// Keyed by the operating system, two generators never agree; keyed by the
// same key, they do (so a test can replay), and a moved one goes on.
TEST(SecureRandomTest, EachGeneratorHasItsOwnKey) {
  SecureRandom a, b;
  std::vector<uint64_t> from_a, from_b;
  for (int i = 0; i < 8; ++i) {
    from_a.push_back(a.Next64());
    from_b.push_back(b.Next64());
  }
  EXPECT_NE(from_a, from_b);
  SecureRandom::Key key{};
  key[31] = 7;
  SecureRandom c = SecureRandom::WithKeyForTesting(key);
  SecureRandom d = SecureRandom::WithKeyForTesting(key);
  EXPECT_EQ(c.Next64(), d.Next64());
  for (int i = 0; i < 5000; ++i) c.Next32();  // across a refill
  for (int i = 0; i < 5000; ++i) d.Next32();
  EXPECT_EQ(c.Gaussian(), d.Gaussian());
  SecureRandom moved = std::move(c);
  EXPECT_EQ(moved.Next64(), d.Next64());
  key[31] = 8;
  SecureRandom e = SecureRandom::WithKeyForTesting(key);
  EXPECT_NE(e.Next64(), SecureRandom::WithKeyForTesting(SecureRandom::Key{}).Next64());
}

}  // namespace
}  // namespace fedsilo::privacy
