#include "transport/backoff.h"

#include <algorithm>

namespace fedsilo::transport {

ReconnectBackoff::ReconnectBackoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                                   uint64_t seed)
    : initial_(std::clamp(initial, std::chrono::milliseconds(0),
                          std::max(max, std::chrono::milliseconds(0)))),
      max_(std::max(max, std::chrono::milliseconds(0))),
      current_(initial_),
      rng_(seed) {}

std::chrono::milliseconds ReconnectBackoff::NextWait() {
  const int64_t b = current_.count();
  std::uniform_int_distribution<int64_t> jitter(b / 2, b);
  const std::chrono::milliseconds wait(jitter(rng_));
  // Doubling past max / 2 would only be cut back to max (and could overflow
  // for a max near the type's limit).
  current_ = current_ > max_ / 2 ? max_ : current_ * 2;
  return wait;
}

}  // namespace fedsilo::transport
