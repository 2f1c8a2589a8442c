#include "cli/audit_command.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "secure/audit_log.h"

namespace fedsilo::cli {

Status AuditVerifyCommand(const std::string& path, const std::string& anchor_text, bool json) {
  std::optional<secure::AuditAnchor> anchor;
  if (!anchor_text.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(anchor, secure::ParseAuditAnchor(anchor_text));
  }
  StatusOr<secure::AuditVerification> v = secure::VerifyAuditLog(path, anchor);
  if (json) {
    nlohmann::json j = {{"path", path}, {"intact", v.ok()}};
    if (v.ok()) {
      j["entries"] = v->entries;
      j["head"] = v->head;
      j["anchor"] = absl::StrCat(v->entries, ":", v->head);
      j["keyed"] = v->keyed;
      j["anchored"] = v->anchored;
    } else {
      j["error"] = std::string(v.status().message());
    }
    std::printf("%s\n", j.dump().c_str());
  }
  if (!v.ok()) return v.status();
  if (!json) {
    std::printf("%s: %lld entries, chain intact%s%s\n", path.c_str(),
                static_cast<long long>(v->entries),
                v->keyed ? ", every entry authenticated under the storage key" : "",
                v->anchored ? absl::StrCat(", reaches the anchor at entry ", anchor->seq).c_str()
                            : "");
    std::printf("anchor: %lld:%s (keep it elsewhere; --anchor checks that nothing was cut off)\n",
                static_cast<long long>(v->entries), v->head.c_str());
    if (!v->keyed && v->entries > 0) {
      std::printf(
          "note: the entries are not keyed (no storage key ring when they were written): "
          "whoever can write the file could rewrite the whole chain consistently\n");
    }
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::cli
