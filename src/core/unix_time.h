// The wall clock as the Unix epoch counts it, for timestamps in metrics,
// stores and ledgers.
#ifndef FEDSILO_CORE_UNIX_TIME_H_
#define FEDSILO_CORE_UNIX_TIME_H_

#include <chrono>
#include <cstdint>

namespace fedsilo {

// Seconds since the Unix epoch, with sub-second precision.
inline double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Whole milliseconds since the Unix epoch (heartbeats, MLflow timestamps).
inline int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace fedsilo

#endif  // FEDSILO_CORE_UNIX_TIME_H_
