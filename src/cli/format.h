// Small formatting helpers shared by the CLI's commands.
#ifndef FEDSILO_CLI_FORMAT_H_
#define FEDSILO_CLI_FORMAT_H_

#include <string>

namespace fedsilo::cli {

// "2026-11-28 04:31:50" in local time; "-" for 0 (never).
std::string FormatTime(double unix_seconds);

// "4.2s" under a minute, else "3m07s".
std::string FormatDuration(double seconds);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_FORMAT_H_
