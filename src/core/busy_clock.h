// BusyClock: records the time intervals during which some piece of work (local
// training, evaluation) was running, possibly on several threads at once, and
// reports the length of their union. Used to measure how much of a run's wall
// time is orchestration overhead. Thread-safe.
#ifndef FEDSILO_CORE_BUSY_CLOCK_H_
#define FEDSILO_CORE_BUSY_CLOCK_H_

#include <chrono>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"

namespace fedsilo {

class BusyClock {
 public:
  using Clock = std::chrono::steady_clock;

  // Marks [start, end) as busy.
  void Record(Clock::time_point start, Clock::time_point end);

  // Seconds covered by at least one recorded interval.
  double BusySeconds() const;

  // Records the lifetime of the scope; a null clock records nothing.
  class Scope {
   public:
    explicit Scope(BusyClock* clock) : clock_(clock), start_(Clock::now()) {}
    ~Scope() {
      if (clock_ != nullptr) clock_->Record(start_, Clock::now());
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    BusyClock* clock_;
    Clock::time_point start_;
  };

 private:
  mutable Mutex mu_;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> intervals_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedsilo

#endif  // FEDSILO_CORE_BUSY_CLOCK_H_
