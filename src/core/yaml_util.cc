#include "core/yaml_util.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/job_config.h"

namespace fedsilo {

StatusOr<YAML::Node> ParseYaml(absl::string_view text, absl::string_view source) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
}

Status YamlError(absl::string_view source, const YAML::Node& at, absl::string_view message) {
  std::string location(source);
  if (at && !at.Mark().is_null()) absl::StrAppend(&location, ":", at.Mark().line + 1);
  return absl::InvalidArgumentError(absl::StrCat(location, ": ", message));
}

std::string NearestName(absl::string_view got, const std::vector<std::string>& candidates) {
  std::string best;
  int best_distance = std::numeric_limits<int>::max();
  for (const std::string& c : candidates) {
    const int d = EditDistance(got, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  const int allowed = std::max<int>(2, static_cast<int>(got.size()) / 3);
  return best_distance <= allowed ? best : "";
}

Status CheckYamlKeys(absl::string_view source, const YAML::Node& map, absl::string_view path,
                     const std::vector<std::string>& known) {
  if (!map || map.IsNull()) return absl::OkStatus();
  if (!map.IsMap()) {
    return YamlError(source, map,
                     absl::StrCat(path.empty() ? "the document" : path,
                                  ": must be a mapping of keys to values"));
  }
  auto joined = [&](const std::string& key) {
    return path.empty() ? key : absl::StrCat(path, ".", key);
  };
  for (const auto& entry : map) {
    if (!entry.first.IsScalar()) {
      return YamlError(source, entry.first,
                       absl::StrCat(path.empty() ? "the document" : path,
                                    ": a key must be a name, not a list or a mapping"));
    }
    const std::string key = entry.first.Scalar();
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    const std::string nearest = NearestName(key, known);
    return YamlError(
        source, entry.first,
        absl::StrCat(
            "unknown key '", joined(key), "'",
            nearest.empty() ? "" : absl::StrCat(" (did you mean '", joined(nearest), "'?)"),
            "; valid keys here: ", absl::StrJoin(known, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo
