// This release's version, from CMake's project(VERSION).
#ifndef FEDSILO_CORE_VERSION_H_
#define FEDSILO_CORE_VERSION_H_

#include <string>

#include "absl/strings/string_view.h"

namespace fedsilo {

// "0.2.0"
absl::string_view FedsiloVersion();

// "fedsilo 0.2.0": what a peer is told this end runs.
std::string FedsiloRelease();

}  // namespace fedsilo

#endif  // FEDSILO_CORE_VERSION_H_
