#include "core/kernels.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace fedsilo::kernels {
namespace {

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Sizes straddle the kernels' block size.
class KernelsTest : public ::testing::TestWithParam<size_t> {};

TEST_P(KernelsTest, WeightedFoldMatchesNaiveSum) {
  const size_t n = GetParam();
  for (size_t k : {1u, 2u, 3u, 5u}) {
    std::vector<std::vector<float>> in;
    std::vector<const float*> ptrs;
    std::vector<float> w;
    for (size_t i = 0; i < k; ++i) {
      in.push_back(Random(n, static_cast<unsigned>(i + 1)));
      w.push_back(0.5f + static_cast<float>(i));
    }
    for (auto& v : in) ptrs.push_back(v.data());
    std::vector<float> start = Random(n, 99);
    for (bool accumulate : {false, true}) {
      std::vector<float> out = start;
      WeightedFold(absl::MakeSpan(out), accumulate, ptrs, w);
      for (size_t j = 0; j < n; ++j) {
        double expected = accumulate ? start[j] : 0.0;
        for (size_t i = 0; i < k; ++i) expected += static_cast<double>(w[i]) * in[i][j];
        ASSERT_NEAR(out[j], expected, 1e-5) << "k=" << k << " j=" << j;
      }
    }
  }
}

TEST_P(KernelsTest, FoldAndApplyComputesBasePlusScaledSum) {
  const size_t n = GetParam();
  std::vector<float> base = Random(n, 1), acc = Random(n, 2), x = Random(n, 3), y = Random(n, 4);
  std::vector<const float*> ptrs = {x.data(), y.data()};
  std::vector<float> w = {2, 3};
  std::vector<float> out(n);
  FoldAndApply(absl::MakeSpan(out), base, 0.25f, acc.data(), ptrs, w);
  for (size_t j = 0; j < n; ++j) {
    ASSERT_NEAR(out[j], base[j] + 0.25 * (acc[j] + 2 * x[j] + 3 * y[j]), 1e-5);
  }
  // No running sum and no inputs: out = base.
  FoldAndApply(absl::MakeSpan(out), base, 0.25f, nullptr, {}, {});
  for (size_t j = 0; j < n; ++j) ASSERT_EQ(out[j], base[j]);
  // In place on base.
  std::vector<float> in_place = base;
  FoldAndApply(absl::MakeSpan(in_place), in_place, 1.0f, nullptr, ptrs, w);
  for (size_t j = 0; j < n; ++j) ASSERT_NEAR(in_place[j], base[j] + 2 * x[j] + 3 * y[j], 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Sizes, KernelsTest, ::testing::Values(0, 1, 7, 1024, 1025, 5000));

TEST(KernelsTest, SubtractAxpyScaleNorm) {
  std::vector<float> a = {3, 5, 7}, b = {1, 1, 2}, out(3);
  Subtract(a, b, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{2, 4, 5}));
  Axpy(2, b, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{4, 6, 9}));
  Scale(0.5f, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{2, 3, 4.5f}));
  EXPECT_DOUBLE_EQ(SquaredNorm(out), 4 + 9 + 20.25);
}

}  // namespace
}  // namespace fedsilo::kernels
