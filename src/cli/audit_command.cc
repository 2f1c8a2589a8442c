#include "cli/audit_command.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "secure/audit_log.h"

namespace fedsilo::cli {

Status AuditVerifyCommand(const std::string& path, bool json) {
  StatusOr<secure::AuditVerification> v = secure::VerifyAuditLog(path);
  if (json) {
    nlohmann::json j = {{"path", path}, {"intact", v.ok()}};
    if (v.ok()) {
      j["entries"] = v->entries;
      j["head"] = v->head;
    } else {
      j["error"] = std::string(v.status().message());
    }
    std::printf("%s\n", j.dump().c_str());
  }
  if (!v.ok()) return v.status();
  if (!json) {
    std::printf("%s: %lld entries, chain intact; head %s\n", path.c_str(),
                static_cast<long long>(v->entries), v->head.c_str());
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::cli
