// The wall clock as the Unix epoch counts it, for timestamps in metrics,
// stores and ledgers.
#ifndef FEDSILO_CORE_UNIX_TIME_H_
#define FEDSILO_CORE_UNIX_TIME_H_

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>

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

// `t` in UTC for people to read: "2026-12-01 22:18 UTC", or with `date_only`
// "2026-12-01".
inline std::string UtcTime(std::chrono::system_clock::time_point t, bool date_only = false) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), date_only ? "%Y-%m-%d" : "%Y-%m-%d %H:%M UTC", &tm);
  return buffer;
}

}  // namespace fedsilo

#endif  // FEDSILO_CORE_UNIX_TIME_H_
