#include "core/version.h"

#include "absl/strings/str_cat.h"

namespace fedsilo {

absl::string_view FedsiloVersion() { return FEDSILO_VERSION; }

std::string FedsiloRelease() { return absl::StrCat("fedsilo ", FedsiloVersion()); }

}  // namespace fedsilo
