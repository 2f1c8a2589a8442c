#include "silo/outgoing.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace fedsilo::silo {

Status Outgoing(const Status& status, const std::string& silo) {
  if (status.ok()) return status;
  const bool shareable = IsShareable(status);
  if (!shareable || !PrivateDetail(status).empty()) {
    spdlog::warn("silo '{}': {}", silo, FullMessage(status));  // stays here
  }
  if (shareable) return Shareable(Status(status.code(), status.message()));
  return Shareable(Status(
      status.code(),
      absl::StrCat("silo '", silo, "': the task failed (", absl::StatusCodeToString(status.code()),
                   ") on the silo's data or while training; the reason stays in "
                   "the silo's own log")));
}

}  // namespace fedsilo::silo
