#include "transport/backoff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "transport/silo_client.h"

namespace fedsilo::transport {
namespace {

using std::chrono::milliseconds;

// SiloClientOptions' defaults, which docs/operations.md documents (0.5 s doubling to
// 10 s); ReconnectBackoffTest.TheDefaultsAreTheDocumentedOnes pins them.
const milliseconds kInitial = SiloClientOptions{}.initial_backoff;
const milliseconds kMax = SiloClientOptions{}.max_backoff;

std::vector<int64_t> Waits(ReconnectBackoff& backoff, int n) {
  std::vector<int64_t> waits;
  for (int i = 0; i < n; ++i) waits.push_back(backoff.NextWait().count());
  return waits;
}

TEST(ReconnectBackoffTest, TheDefaultsAreTheDocumentedOnes) {
  // docs/operations.md: silos heartbeat every 5 s and reconnect after 0.5 s doubling to 10 s.
  const SiloClientOptions options;
  EXPECT_EQ(options.heartbeat_interval, milliseconds(5000));
  EXPECT_EQ(options.initial_backoff, milliseconds(500));
  EXPECT_EQ(options.max_backoff, milliseconds(10000));
}

TEST(ReconnectBackoffTest, WaitsLieInTheUpperHalfOfABackoffThatDoublesFrom500To10000) {
  const std::vector<int64_t> expected = {500, 1000, 2000, 4000, 8000, 10000, 10000};
  for (uint64_t seed : {1, 2, 3, 42, 20240611}) {
    ReconnectBackoff backoff(kInitial, kMax, seed);
    for (size_t i = 0; i < expected.size(); ++i) {
      const int64_t b = expected[i];
      ASSERT_EQ(backoff.current().count(), b) << "seed " << seed << ", attempt " << i;
      const int64_t wait = backoff.NextWait().count();
      EXPECT_GE(wait, b / 2) << "seed " << seed << ", attempt " << i;
      EXPECT_LE(wait, b) << "seed " << seed << ", attempt " << i;
    }
  }
}

TEST(ReconnectBackoffTest, TheCapHoldsForThousandsOfAttempts) {
  ReconnectBackoff backoff(kInitial, kMax, 7);
  for (int i = 0; i < 5000; ++i) {
    const int64_t wait = backoff.NextWait().count();
    ASSERT_LE(wait, kMax.count()) << "attempt " << i;
    ASSERT_LE(backoff.current(), kMax) << "attempt " << i;
  }
  EXPECT_EQ(backoff.current(), kMax);
}

TEST(ReconnectBackoffTest, ACapNearTheTypesLimitDoesNotOverflow) {
  const milliseconds huge = milliseconds::max();
  ReconnectBackoff backoff(huge / 4, huge, 7);
  for (int i = 0; i < 10; ++i) {
    EXPECT_GE(backoff.NextWait().count(), 0) << "attempt " << i;
    EXPECT_GT(backoff.current().count(), 0) << "attempt " << i;
  }
  EXPECT_EQ(backoff.current(), huge);
}

TEST(ReconnectBackoffTest, ResetGoesBackToTheInitialBackoff) {
  ReconnectBackoff backoff(kInitial, kMax, 7);
  Waits(backoff, 10);
  ASSERT_EQ(backoff.current(), kMax);
  backoff.Reset();
  EXPECT_EQ(backoff.current(), kInitial);
  const int64_t wait = backoff.NextWait().count();
  EXPECT_GE(wait, 250);
  EXPECT_LE(wait, 500);
  EXPECT_EQ(backoff.current(), milliseconds(1000));  // and doubles again from there
}

TEST(ReconnectBackoffTest, TheSameSeedGivesTheSameWaitsAndAnotherSeedOtherWaits) {
  ReconnectBackoff a(kInitial, kMax, 1);
  ReconnectBackoff again(kInitial, kMax, 1);
  ReconnectBackoff b(kInitial, kMax, 2);
  const std::vector<int64_t> first = Waits(a, 20);
  EXPECT_EQ(first, Waits(again, 20));
  EXPECT_NE(first, Waits(b, 20));
}

// Draws at one backoff (the cap) reach both the lower and the upper half of
// [b/2, b]: the wait is really jittered, not stuck at one end. Fixed seed, so
// this cannot fail by luck.
TEST(ReconnectBackoffTest, DrawsAtTheCapReachBothHalvesOfTheInterval) {
  ReconnectBackoff backoff(kMax, kMax, 12345);
  int lower = 0;  // in [5000, 7500)
  int upper = 0;  // in (7500, 10000]
  int64_t least = kMax.count();
  int64_t most = 0;
  for (int i = 0; i < 1000; ++i) {
    const int64_t wait = backoff.NextWait().count();
    ASSERT_GE(wait, 5000);
    ASSERT_LE(wait, 10000);
    if (wait < 7500) ++lower;
    if (wait > 7500) ++upper;
    least = std::min(least, wait);
    most = std::max(most, wait);
  }
  // Uniform: about 500 each; far from either end.
  EXPECT_GT(lower, 400);
  EXPECT_GT(upper, 400);
  // And spread over the interval, not clustered in the middle.
  EXPECT_LT(least, 5100);
  EXPECT_GT(most, 9900);
}

TEST(ReconnectBackoffTest, AnInitialAboveTheCapIsCutToTheCap) {
  ReconnectBackoff backoff(milliseconds(50000), kMax, 7);
  EXPECT_EQ(backoff.current(), kMax);
  EXPECT_LE(backoff.NextWait(), kMax);
}

TEST(ReconnectBackoffTest, AZeroBackoffWaitsZero) {
  ReconnectBackoff backoff(milliseconds(0), milliseconds(0), 7);
  EXPECT_EQ(backoff.NextWait(), milliseconds(0));
  EXPECT_EQ(backoff.NextWait(), milliseconds(0));
}

}  // namespace
}  // namespace fedsilo::transport
