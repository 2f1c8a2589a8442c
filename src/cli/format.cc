#include "cli/format.h"

#include <ctime>

#include "absl/strings/str_format.h"

namespace fedsilo::cli {

std::string FormatTime(double unix_seconds) {
  if (unix_seconds <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm local{};
  localtime_r(&t, &local);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &local);
  return buf;
}

std::string FormatDuration(double seconds) {
  if (seconds < 60) return absl::StrFormat("%.1fs", seconds);
  const int s = static_cast<int>(seconds + 0.5);
  return absl::StrFormat("%dm%02ds", s / 60, s % 60);
}

}  // namespace fedsilo::cli
