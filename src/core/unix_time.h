// The wall clock as the Unix epoch counts it, for timestamps in metrics,
// stores and ledgers.
#ifndef FEDSILO_CORE_UNIX_TIME_H_
#define FEDSILO_CORE_UNIX_TIME_H_

#include <chrono>

namespace fedsilo {

// Seconds since the Unix epoch, with sub-second precision.
inline double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace fedsilo

#endif  // FEDSILO_CORE_UNIX_TIME_H_
