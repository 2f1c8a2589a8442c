// ReconnectBackoff: how long a silo waits before it dials the orchestrator
// again. The backoff doubles after every failed attempt, from `initial` up to
// `max`, and each wait is drawn with "equal jitter": half the backoff, plus a
// random share of the other half. The fixed half keeps a silo from hammering
// an orchestrator that is down; the random half spreads silos that lost the
// same orchestrator at the same moment, so that its restart is not met by all
// of them at once.
//
// Thread safety: none; one per reconnect loop.
#ifndef FEDSILO_TRANSPORT_BACKOFF_H_
#define FEDSILO_TRANSPORT_BACKOFF_H_

#include <chrono>
#include <cstdint>
#include <random>

namespace fedsilo::transport {

class ReconnectBackoff {
 public:
  // `seed` decides the jitter: a fixed one gives a fixed sequence (tests), a
  // fresh one per silo (std::random_device) keeps silos apart. `initial` is
  // taken within [0, max], so a misconfigured pair still gives waits that
  // neither run backwards nor overflow.
  ReconnectBackoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, uint64_t seed);

  // The wait before the next attempt, drawn uniformly from [b/2, b] for the
  // current backoff b (whole milliseconds); then b doubles, up to `max`.
  std::chrono::milliseconds NextWait();
  // Back to `initial`: called once a session opened, since the next failure
  // is a new outage, not the same one going on.
  void Reset() { current_ = initial_; }
  // The backoff b the next NextWait() draws from.
  std::chrono::milliseconds current() const { return current_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds current_;
  std::mt19937_64 rng_;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_BACKOFF_H_
