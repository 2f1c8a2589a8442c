#include "transport/vertical_party.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "secure/audit_log.h"

namespace fedsilo::transport {

std::string SetMessage(const std::string& domain, const BlindedSet& set) {
  // Length-prefixed, so that no two different sets read as the same text.
  return absl::StrCat("fedsilo vertical blinded set v1\n", domain.size(), ":", domain, "\n",
                      set.origin.size(), ":", set.origin, "\n", set.hops, "\n",
                      secure::BytesDigest(set.points));
}

std::string BlinderAt(const std::vector<std::string>& parties, const std::string& origin, int hop) {
  auto it = std::find(parties.begin(), parties.end(), origin);
  if (it == parties.end() || hop < 1) return "";
  const size_t o = static_cast<size_t>(it - parties.begin());
  return parties[(o + static_cast<size_t>(hop) - 1) % parties.size()];
}

}  // namespace fedsilo::transport
