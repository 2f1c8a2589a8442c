// Reading YAML files (jobs, federations, dataset catalogs) with errors that
// name the file, the line and the key.
#ifndef FEDSILO_CORE_YAML_UTIL_H_
#define FEDSILO_CORE_YAML_UTIL_H_

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace fedsilo {

// Parses `text`; InvalidArgument "<source>:<line>: not valid YAML: ..." on
// syntax errors.
StatusOr<YAML::Node> ParseYaml(absl::string_view text, absl::string_view source);

// InvalidArgument "<source>:<line>: <message>", the line taken from `at` when
// it has one.
Status YamlError(absl::string_view source, const YAML::Node& at, absl::string_view message);

// The candidate nearest to `got` within a small edit distance, or "".
std::string NearestName(absl::string_view got, const std::vector<std::string>& candidates);

// OK when `map` is a mapping whose keys are all in `known`; otherwise names
// the first unknown key (as "<path>.<key>"), suggests the nearest valid one
// and lists them.
Status CheckYamlKeys(absl::string_view source, const YAML::Node& map, absl::string_view path,
                     const std::vector<std::string>& known);

// Runs `parse()`, which reads a YAML document of `source`, turning what
// yaml-cpp throws on a node of an unexpected shape (a list where a name was
// expected, say) into InvalidArgument "<source>:<line>: ...": a hostile file
// is an error, never the end of the process.
template <typename T, typename Parse>
StatusOr<T> GuardYaml(absl::string_view source, Parse&& parse) {
  try {
    return parse();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ": ",
                                                   e.msg.empty() ? "unexpected YAML" : e.msg));
  }
}

}  // namespace fedsilo

#endif  // FEDSILO_CORE_YAML_UTIL_H_
