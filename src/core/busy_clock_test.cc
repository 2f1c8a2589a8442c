#include "core/busy_clock.h"

#include <gtest/gtest.h>

namespace fedsilo {
namespace {

TEST(BusyClockTest, CountsTheUnionOfOverlappingIntervals) {
  BusyClock clock;
  const auto t0 = BusyClock::Clock::time_point{};
  auto at = [&](double s) {
    return t0 +
           std::chrono::duration_cast<BusyClock::Clock::duration>(std::chrono::duration<double>(s));
  };
  clock.Record(at(0), at(2));  // two silos overlapping: [0, 3)
  clock.Record(at(1), at(3));
  clock.Record(at(5), at(6));      // a gap of 2 s, then 1 s
  clock.Record(at(5.2), at(5.5));  // inside the previous one
  clock.Record(at(7), at(7));      // empty
  EXPECT_NEAR(clock.BusySeconds(), 4.0, 1e-9);
}

TEST(BusyClockTest, EmptyClockIsZero) { EXPECT_EQ(BusyClock().BusySeconds(), 0.0); }

}  // namespace
}  // namespace fedsilo
