#include "core/busy_clock.h"

#include <algorithm>

namespace fedsilo {

void BusyClock::Record(Clock::time_point start, Clock::time_point end) {
  if (end <= start) return;
  MutexLock lock(&mu_);
  intervals_.emplace_back(start, end);
}

double BusyClock::BusySeconds() const {
  std::vector<std::pair<Clock::time_point, Clock::time_point>> sorted;
  {
    MutexLock lock(&mu_);
    sorted = intervals_;
  }
  std::sort(sorted.begin(), sorted.end());
  Clock::duration total{0};
  for (size_t i = 0; i < sorted.size();) {
    Clock::time_point start = sorted[i].first, end = sorted[i].second;
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j].first <= end) {
      end = std::max(end, sorted[j].second);
      ++j;
    }
    total += end - start;
    i = j;
  }
  return std::chrono::duration<double>(total).count();
}

}  // namespace fedsilo
