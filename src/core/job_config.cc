#include "core/job_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/file_util.h"
#include "core/yaml_util.h"

namespace fedsilo {

absl::string_view PartitionSchemeName(PartitionScheme scheme) {
  switch (scheme) {
    case PartitionScheme::kIid:
      return "iid";
    case PartitionScheme::kDirichlet:
      return "dirichlet";
    case PartitionScheme::kShards:
      return "shards";
  }
  return "?";
}

absl::string_view DpModeName(DpMode mode) {
  switch (mode) {
    case DpMode::kLocal:
      return "local";
    case DpMode::kCentral:
      return "central";
    default:
      return "none";
  }
}

bool IsBuiltinDataset(absl::string_view name) {
  return std::find(std::begin(kKnownDatasets), std::end(kKnownDatasets), name) !=
         std::end(kKnownDatasets);
}

absl::string_view ScaleKindName(ScaleKind kind) {
  switch (kind) {
    case ScaleKind::kNone:
      return "none";
    case ScaleKind::kStandard:
      return "standard";
    case ScaleKind::kMinMax:
      return "minmax";
  }
  return "?";
}

double FeatureStatistics::Fill(size_t i) const { return count[i] > 0 ? mean[i] : 0.0; }

double FeatureStatistics::Center(size_t i, ScaleKind scale) const {
  switch (scale) {
    case ScaleKind::kNone:
      return 0;
    case ScaleKind::kStandard:
      return Fill(i);
    case ScaleKind::kMinMax:
      return count[i] > 0 && has_min_max() ? min[i] : 0.0;
  }
  return 0;
}

double FeatureStatistics::Divisor(size_t i, ScaleKind scale) const {
  double d = 1;
  if (scale == ScaleKind::kStandard) d = std[i];
  if (scale == ScaleKind::kMinMax) d = has_min_max() ? max[i] - min[i] : 1.0;
  return count[i] > 0 && d > 0 ? d : 1.0;
}

absl::string_view ModelKindName(ModelKind kind) {
  switch (kind) {
    case ModelKind::kLogistic:
      return "logistic";
    case ModelKind::kMlp:
      return "mlp";
    case ModelKind::kCnn:
      return "cnn";
    case ModelKind::kTorchScript:
      return "torchscript";
  }
  return "?";
}

StatusOr<std::string> ShippedModuleDigest(absl::string_view torchscript) {
  absl::string_view digest = torchscript;
  if (!absl::ConsumePrefix(&digest, kShippedModulePrefix)) return std::string();
  if (digest.size() != 64 || digest.find_first_not_of("0123456789abcdef") != digest.npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", torchscript, "' is not ", kShippedModulePrefix, "<64 hex digits>"));
  }
  return std::string(digest);
}

std::string ShippedModulePath(const std::string& dir, absl::string_view digest) {
  return absl::StrCat(dir, "/", digest, ".pt");
}

absl::string_view OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kAdam:
      return "adam";
  }
  return "?";
}

bool IsValidSiloName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

int EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

namespace {

// Reads one YAML mapping, reporting errors as "<source>:<line>: <path>: ...".
class Section {
 public:
  Section(const YAML::Node& node, std::string path, const std::string& source,
          const std::set<std::string>& overridden)
      : node_(node), path_(std::move(path)), source_(source), overridden_(overridden) {}

  // Every key must be one of `known`.
  Status CheckKeys(const std::vector<std::string>& known) const {
    return CheckYamlKeys(source_, node_, path_, known);
  }

  // The value at `key`; an invalid node (`!node` is true) when it is absent.
  YAML::Node Child(const std::string& key) const {
    static const YAML::Node kEmptyMap(YAML::NodeType::Map);
    const YAML::Node& from = (node_ && node_.IsMap()) ? node_ : kEmptyMap;
    return from[key];  // const lookup: never inserts
  }

  Section Sub(const std::string& key) const {
    return Section(Child(key), Join(key), source_, overridden_);
  }

  Status Int(const std::string& key, int64_t min, int64_t max, int64_t* out) const {
    YAML::Node n = Child(key);
    if (!n) return absl::OkStatus();
    int64_t value = 0;
    const std::string range = max == std::numeric_limits<int64_t>::max()
                                  ? absl::StrCat(">= ", min)
                                  : absl::StrCat("in [", min, ", ", max, "]");
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, value)) {
      return Error(n, Join(key), absl::StrCat("must be an integer ", range, ", got ", Show(n)));
    }
    if (value < min || value > max) {
      return Error(n, Join(key), absl::StrCat("must be an integer ", range, ", got ", value));
    }
    *out = value;
    return absl::OkStatus();
  }

  Status Int(const std::string& key, int64_t min, int64_t max, int* out) const {
    int64_t value = *out;
    FEDSILO_RETURN_IF_ERROR(Int(key, min, max, &value));
    *out = static_cast<int>(value);
    return absl::OkStatus();
  }

  // Range [min, max], with either end open when the flag says so.
  Status Double(const std::string& key, double min, bool min_open, double max, bool max_open,
                double* out) const {
    YAML::Node n = Child(key);
    if (!n) return absl::OkStatus();
    const std::string range =
        absl::StrCat(min_open ? "(" : "[", min, ", ", std::isinf(max) ? "inf" : absl::StrCat(max),
                     max_open ? ")" : "]");
    double value = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, value) || !std::isfinite(value)) {
      return Error(n, Join(key), absl::StrCat("must be a number in ", range, ", got ", Show(n)));
    }
    const bool below = min_open ? value <= min : value < min;
    const bool above = max_open ? value >= max : value > max;
    if (below || above) {
      return Error(n, Join(key), absl::StrCat("must be a number in ", range, ", got ", value));
    }
    *out = value;
    return absl::OkStatus();
  }

  Status Bool(const std::string& key, bool* out) const {
    YAML::Node n = Child(key);
    if (!n) return absl::OkStatus();
    bool value = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, value)) {
      return Error(n, Join(key), absl::StrCat("must be true or false, got ", Show(n)));
    }
    *out = value;
    return absl::OkStatus();
  }

  Status String(const std::string& key, std::string* out) const {
    YAML::Node n = Child(key);
    if (!n) return absl::OkStatus();
    if (!n.IsScalar() || n.Scalar().empty()) {
      return Error(n, Join(key), absl::StrCat("must be a non-empty string, got ", Show(n)));
    }
    *out = n.Scalar();
    return absl::OkStatus();
  }

  // A string that must be one of `allowed`; returns its index through `out`.
  Status Choice(const std::string& key, const std::vector<std::string>& allowed,
                std::string* out) const {
    YAML::Node n = Child(key);
    if (!n) return absl::OkStatus();
    std::string value;
    FEDSILO_RETURN_IF_ERROR(String(key, &value));
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      const std::string nearest = NearestName(value, allowed);
      return Error(
          n, Join(key),
          absl::StrCat("unknown value '", value, "'",
                       nearest.empty() ? "" : absl::StrCat(" (did you mean '", nearest, "'?)"),
                       "; one of: ", absl::StrJoin(allowed, ", ")));
    }
    *out = value;
    return absl::OkStatus();
  }

  Status Error(const YAML::Node& at, const std::string& key, absl::string_view message) const {
    std::string location = source_;
    if (!key.empty() && overridden_.count(key) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("--set ", key, ": ", message));
    }
    if (at && at.Mark().line >= 0 && !at.Mark().is_null()) {
      absl::StrAppend(&location, ":", at.Mark().line + 1);
    }
    return absl::InvalidArgumentError(key.empty()
                                          ? absl::StrCat(location, ": ", message)
                                          : absl::StrCat(location, ": ", key, ": ", message));
  }

  std::string Join(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }

  const YAML::Node& node() const { return node_; }

 private:
  static std::string Show(const YAML::Node& n) {
    if (n.IsScalar()) return absl::StrCat("'", n.Scalar(), "'");
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a mapping";
    return "nothing";
  }

  YAML::Node node_;
  std::string path_;
  const std::string& source_;
  const std::set<std::string>& overridden_;
};

template <typename Enum, size_t N>
Status ReadEnum(const Section& s, const std::string& key, const Enum (&values)[N],
                absl::string_view (*name)(Enum), Enum* out) {
  std::vector<std::string> allowed;
  for (Enum v : values) allowed.emplace_back(name(v));
  std::string chosen(name(*out));
  FEDSILO_RETURN_IF_ERROR(s.Choice(key, allowed, &chosen));
  for (Enum v : values) {
    if (name(v) == chosen) *out = v;
  }
  return absl::OkStatus();
}

// A YAML list of scalars at `node` (named `key` in errors) read as T.
template <typename T>
Status ReadList(const Section& s, const YAML::Node& node, const std::string& key,
                std::vector<T>* out) {
  if (!node.IsSequence()) return s.Error(node, key, "must be a list");
  out->clear();
  for (const auto& item : node) {
    T value{};
    if (!item.IsScalar() || !YAML::convert<T>::decode(item, value)) {
      return s.Error(item, key,
                     absl::StrCat("holds '", item.IsScalar() ? item.Scalar() : "?",
                                  "', which is not a valid entry"));
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(value)) return s.Error(item, key, "holds a value that is not finite");
    }
    out->push_back(std::move(value));
  }
  return absl::OkStatus();
}

Status ReadStatistics(const Section& s, FeatureStatistics* out) {
  FEDSILO_RETURN_IF_ERROR(s.CheckKeys({"label", "rows", "class_counts", "features", "count", "mean",
                                       "std", "min", "max", "shape"}));
  FeatureStatistics st;
  FEDSILO_RETURN_IF_ERROR(s.String("label", &st.label));
  FEDSILO_RETURN_IF_ERROR(s.Int("rows", 0, std::numeric_limits<int64_t>::max(), &st.rows));
  const std::vector<std::pair<const char*, std::vector<double>*>> numbers = {
      {"mean", &st.mean}, {"std", &st.std}, {"min", &st.min}, {"max", &st.max}};
  for (const char* key : {"label", "rows", "class_counts", "features", "count", "mean", "std"}) {
    if (!s.Child(key)) return s.Error(s.node(), s.Join(key), "is required in statistics");
  }
  // Minima and maxima only where every silo's policy shares them.
  if (!s.Child("min") != !s.Child("max")) {
    return s.Error(s.node(), s.Join(s.Child("min") ? "max" : "min"),
                   "is required in statistics with the other of min and max");
  }
  FEDSILO_RETURN_IF_ERROR(
      ReadList(s, s.Child("class_counts"), s.Join("class_counts"), &st.class_counts));
  FEDSILO_RETURN_IF_ERROR(ReadList(s, s.Child("features"), s.Join("features"), &st.features));
  FEDSILO_RETURN_IF_ERROR(ReadList(s, s.Child("count"), s.Join("count"), &st.count));
  for (const auto& [key, list] : numbers) {
    if (s.Child(key)) FEDSILO_RETURN_IF_ERROR(ReadList(s, s.Child(key), s.Join(key), list));
  }
  if (st.features.empty()) return s.Error(s.Child("features"), s.Join("features"), "is empty");
  if (s.Child("shape")) {
    FEDSILO_RETURN_IF_ERROR(ReadList(s, s.Child("shape"), s.Join("shape"), &st.shape));
    for (int64_t d : st.shape) {
      if (d < 1 || d > 100000) {
        return s.Error(s.Child("shape"), s.Join("shape"), "each dimension must be in [1, 100000]");
      }
    }
  }
  if (st.class_counts.size() < 2) {
    return s.Error(s.Child("class_counts"), s.Join("class_counts"), "needs two classes or more");
  }
  const size_t n = st.features.size();
  for (const auto& [key, size] :
       std::vector<std::pair<std::string, size_t>>{{"count", st.count.size()},
                                                   {"mean", st.mean.size()},
                                                   {"std", st.std.size()},
                                                   {"min", st.min.size()},
                                                   {"max", st.max.size()}}) {
    if (size != n && !((key == "min" || key == "max") && !s.Child(key))) {
      return s.Error(s.Child(key), s.Join(key),
                     absl::StrCat("has ", size, " values for ", n, " features"));
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (st.std[i] < 0 || st.count[i] < 0 || (st.has_min_max() && st.min[i] > st.max[i])) {
      return s.Error(s.node(), s.Join("features"),
                     absl::StrCat("feature '", st.features[i],
                                  "' has a negative count or deviation, or min > max"));
    }
  }
  *out = std::move(st);
  return absl::OkStatus();
}

Status ReadSilos(const Section& fed, FederationConfig* out) {
  YAML::Node n = fed.Child("silos");
  if (!n)
    return fed.Error(fed.node(), "federation.silos", "is required (a count or a list of names)");
  if (n.IsScalar()) {
    int64_t count = 0;
    FEDSILO_RETURN_IF_ERROR(fed.Int("silos", 1, 10000, &count));
    out->silos.clear();
    for (int64_t i = 1; i <= count; ++i) out->silos.push_back(absl::StrCat("silo-", i));
    return absl::OkStatus();
  }
  if (!n.IsSequence() || n.size() == 0) {
    return fed.Error(n, "federation.silos",
                     "must be a count (1-10000) or a non-empty list of names");
  }
  out->silos.clear();
  std::set<std::string> seen;
  for (const auto& item : n) {
    const std::string name = item.IsScalar() ? item.Scalar() : "";
    if (!IsValidSiloName(name)) {
      return fed.Error(item, "federation.silos",
                       absl::StrCat("silo name '", name,
                                    "' must be 1-64 characters of letters, digits, '-', '_', '.'"));
    }
    if (!seen.insert(name).second) {
      return fed.Error(item, "federation.silos", absl::StrCat("silo '", name, "' is listed twice"));
    }
    out->silos.push_back(name);
  }
  return absl::OkStatus();
}

Status ApplyOverride(YAML::Node& root, const ConfigOverride& o) {
  std::vector<std::string> parts = absl::StrSplit(o.key, '.');
  YAML::Node value;
  try {
    value = YAML::Load(o.value);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", o.key, ": value '", o.value, "' is not valid YAML: ", e.msg));
  }
  if (!value || value.IsNull()) value = YAML::Node(o.value);
  YAML::Node cur;
  cur.reset(root);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--set ", o.key, ": empty key segment"));
    }
    YAML::Node next = cur[parts[i]];
    if (next && !next.IsMap() && !next.IsNull()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--set ", o.key, ": '", absl::StrJoin(parts.begin(), parts.begin() + i + 1, "."),
          "' is a value, not a section"));
    }
    if (!next || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next.reset(cur[parts[i]]);
    }
    cur.reset(next);
  }
  if (parts.back().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--set ", o.key, ": empty key segment"));
  }
  cur[parts.back()] = value;
  return absl::OkStatus();
}

}  // namespace

int SilosPerRound(const FederationConfig& federation) {
  const int all = static_cast<int>(federation.silos.size());
  const int share = static_cast<int>(std::ceil(federation.fraction * static_cast<double>(all)));
  return std::min(all, std::max(share, federation.min_silos));
}

bool StrategyNeedsAllUpdates(absl::string_view name) {
  return name == "median" || name == "trimmed_mean" || name == "krum" || name == "multi_krum";
}

StatusOr<ConfigOverride> ParseOverride(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set '", text, "': expected key=value, e.g. training.rounds=3"));
  }
  return ConfigOverride{std::string(text.substr(0, eq)), std::string(text.substr(eq + 1))};
}

namespace {
StatusOr<JobConfig> ParseJobConfigUnguarded(absl::string_view yaml_text,
                                            absl::string_view source_view,
                                            const std::vector<ConfigOverride>& overrides);
}  // namespace

StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml_text, absl::string_view source,
                                   const std::vector<ConfigOverride>& overrides) {
  return GuardYaml<JobConfig>(
      source, [&] { return ParseJobConfigUnguarded(yaml_text, source, overrides); });
}

namespace {
StatusOr<JobConfig> ParseJobConfigUnguarded(absl::string_view yaml_text,
                                            absl::string_view source_view,
                                            const std::vector<ConfigOverride>& overrides) {
  const std::string source(source_view);
  FEDSILO_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source));
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": a job must be a YAML mapping"));
  }
  std::set<std::string> overridden;
  for (const ConfigOverride& o : overrides) {
    FEDSILO_RETURN_IF_ERROR(ApplyOverride(root, o));
    overridden.insert(o.key);
  }

  JobConfig c;
  Section top(root, "", source, overridden);
  FEDSILO_RETURN_IF_ERROR(
      top.CheckKeys({"name", "experiment", "seed", "data", "model", "preprocess", "training",
                     "federation", "strategy", "privacy", "checkpoint", "tracking"}));
  FEDSILO_RETURN_IF_ERROR(top.String("name", &c.name));
  FEDSILO_RETURN_IF_ERROR(top.String("experiment", &c.experiment));
  int64_t seed = 0;
  FEDSILO_RETURN_IF_ERROR(top.Int("seed", 0, std::numeric_limits<int64_t>::max(), &seed));
  c.seed = static_cast<uint64_t>(seed);

  const Section data = top.Sub("data");
  FEDSILO_RETURN_IF_ERROR(
      data.CheckKeys({"dataset", "catalog", "test_fraction", "silo_test_fraction", "partition",
                      "alpha", "shards_per_silo"}));
  if (!data.Child("dataset")) {
    return top.Error(
        root, "data.dataset",
        absl::StrCat("is required: a built-in data set (", absl::StrJoin(kKnownDatasets, ", "),
                     ") or a name in the silos' dataset catalogs"));
  }
  FEDSILO_RETURN_IF_ERROR(data.String("dataset", &c.data.dataset));
  if (!IsBuiltinDataset(c.data.dataset)) {
    const std::vector<std::string> builtin(std::begin(kKnownDatasets), std::end(kKnownDatasets));
    const std::string nearest = NearestName(c.data.dataset, builtin);
    if (!nearest.empty()) {
      return data.Error(
          data.Child("dataset"), "data.dataset",
          absl::StrCat("unknown value '", c.data.dataset, "' (did you mean '", nearest,
                       "'?); a catalog's data set needs a name further "
                       "from the built-in ones"));
    }
    if (!IsValidSiloName(c.data.dataset)) {
      return data.Error(data.Child("dataset"), "data.dataset",
                        absl::StrCat("'", c.data.dataset,
                                     "' is not a valid data set name (letters, digits, '-', '_', "
                                     "'.')"));
    }
  }
  FEDSILO_RETURN_IF_ERROR(data.String("catalog", &c.data.catalog));
  FEDSILO_RETURN_IF_ERROR(data.Double("test_fraction", 0, true, 1, true, &c.data.test_fraction));
  FEDSILO_RETURN_IF_ERROR(
      data.Double("silo_test_fraction", 0, false, 1, true, &c.data.silo_test_fraction));
  constexpr PartitionScheme kSchemes[] = {PartitionScheme::kIid, PartitionScheme::kDirichlet,
                                          PartitionScheme::kShards};
  FEDSILO_RETURN_IF_ERROR(
      ReadEnum(data, "partition", kSchemes, &PartitionSchemeName, &c.data.partition));
  FEDSILO_RETURN_IF_ERROR(data.Double("alpha", 0, true, INFINITY, false, &c.data.alpha));
  FEDSILO_RETURN_IF_ERROR(data.Int("shards_per_silo", 1, 1000, &c.data.shards_per_silo));

  const Section model = top.Sub("model");
  FEDSILO_RETURN_IF_ERROR(model.CheckKeys({"name", "hidden", "torchscript"}));
  constexpr ModelKind kModels[] = {ModelKind::kLogistic, ModelKind::kMlp, ModelKind::kCnn,
                                   ModelKind::kTorchScript};
  FEDSILO_RETURN_IF_ERROR(ReadEnum(model, "name", kModels, &ModelKindName, &c.model.kind));
  FEDSILO_RETURN_IF_ERROR(model.String("torchscript", &c.model.torchscript));
  if (!c.model.torchscript.empty()) {
    // `--set model.torchscript=...` replaces a job's built-in model.
    if (model.Child("name") && c.model.kind != ModelKind::kTorchScript &&
        overridden.count("model.torchscript") == 0) {
      return model.Error(model.Child("name"), "model.name",
                         absl::StrCat("is '", ModelKindName(c.model.kind),
                                      "', but model.torchscript names a model file; drop one"));
    }
    c.model.kind = ModelKind::kTorchScript;
  } else if (c.model.kind == ModelKind::kTorchScript) {
    return model.Error(model.Child("name"), "model.torchscript",
                       "is required with model.name torchscript: the module file (.pt)");
  }
  if (YAML::Node hidden = model.Child("hidden")) {
    if (!hidden.IsSequence()) {
      return model.Error(hidden, "model.hidden", "must be a list of layer widths, e.g. [200, 200]");
    }
    c.model.hidden.clear();
    for (const auto& item : hidden) {
      int width = 0;
      if (!item.IsScalar() || !YAML::convert<int>::decode(item, width) || width < 1 ||
          width > 100000) {
        return model.Error(item, "model.hidden",
                           "each layer width must be an integer in [1, 100000]");
      }
      c.model.hidden.push_back(width);
    }
  }

  const Section pre = top.Sub("preprocess");
  FEDSILO_RETURN_IF_ERROR(pre.CheckKeys({"scale", "categories", "statistics"}));
  constexpr ScaleKind kScales[] = {ScaleKind::kNone, ScaleKind::kStandard, ScaleKind::kMinMax};
  FEDSILO_RETURN_IF_ERROR(ReadEnum(pre, "scale", kScales, &ScaleKindName, &c.preprocess.scale));
  if (YAML::Node categories = pre.Child("categories")) {
    if (!categories.IsMap()) {
      return pre.Error(categories, "preprocess.categories",
                       "must map each categorical column to its values, e.g. "
                       "{merchant: [grocery, online, travel]}");
    }
    for (const auto& kv : categories) {
      const std::string column = kv.first.Scalar();
      const std::string key = absl::StrCat("preprocess.categories.", column);
      std::vector<std::string> values;
      FEDSILO_RETURN_IF_ERROR(ReadList(pre, kv.second, key, &values));
      if (values.empty()) return pre.Error(kv.second, key, "must list at least one value");
      std::set<std::string> seen;
      for (const std::string& v : values) {
        if (!seen.insert(v).second) {
          return pre.Error(kv.second, key, absl::StrCat("lists '", v, "' twice"));
        }
      }
      c.preprocess.categories.emplace_back(column, std::move(values));
    }
  }
  if (pre.Child("statistics")) {
    FEDSILO_RETURN_IF_ERROR(ReadStatistics(pre.Sub("statistics"), &c.preprocess.statistics));
  }

  const Section training = top.Sub("training");
  FEDSILO_RETURN_IF_ERROR(training.CheckKeys({"rounds", "local_epochs", "batch_size", "optimizer",
                                              "learning_rate", "momentum", "weight_decay"}));
  TrainingConfig& t = c.training;
  FEDSILO_RETURN_IF_ERROR(training.Int("rounds", 1, 100000, &t.rounds));
  FEDSILO_RETURN_IF_ERROR(training.Int("local_epochs", 1, 10000, &t.local_epochs));
  FEDSILO_RETURN_IF_ERROR(training.Int("batch_size", 1, 1000000, &t.batch_size));
  constexpr OptimizerKind kOptimizers[] = {OptimizerKind::kSgd, OptimizerKind::kAdam};
  FEDSILO_RETURN_IF_ERROR(
      ReadEnum(training, "optimizer", kOptimizers, &OptimizerKindName, &t.optimizer));
  FEDSILO_RETURN_IF_ERROR(training.Double("learning_rate", 0, true, 100, false, &t.learning_rate));
  FEDSILO_RETURN_IF_ERROR(training.Double("momentum", 0, false, 1, true, &t.momentum));
  FEDSILO_RETURN_IF_ERROR(training.Double("weight_decay", 0, false, 1, false, &t.weight_decay));

  const Section fed = top.Sub("federation");
  FEDSILO_RETURN_IF_ERROR(fed.CheckKeys(
      {"silos", "fraction", "min_silos", "round_timeout", "wait_for_silos", "round_retries"}));
  FEDSILO_RETURN_IF_ERROR(ReadSilos(fed, &c.federation));
  FEDSILO_RETURN_IF_ERROR(fed.Double("fraction", 0, true, 1, false, &c.federation.fraction));
  FEDSILO_RETURN_IF_ERROR(fed.Int("min_silos", 1, 10000, &c.federation.min_silos));
  FEDSILO_RETURN_IF_ERROR(fed.Int("round_timeout", 1, 7 * 24 * 3600, &c.federation.round_timeout));
  FEDSILO_RETURN_IF_ERROR(
      fed.Int("wait_for_silos", 1, 7 * 24 * 3600, &c.federation.wait_for_silos));
  FEDSILO_RETURN_IF_ERROR(fed.Int("round_retries", 0, 100, &c.federation.round_retries));
  if (c.federation.min_silos > static_cast<int>(c.federation.silos.size())) {
    return fed.Error(fed.Child("min_silos"), "federation.min_silos",
                     absl::StrCat("is ", c.federation.min_silos, " but the federation has only ",
                                  c.federation.silos.size(), " silos"));
  }

  const Section strategy = top.Sub("strategy");
  FEDSILO_RETURN_IF_ERROR(strategy.CheckKeys(
      {"name", "server_learning_rate", "server_momentum", "beta1", "beta2", "tau", "proximal_mu",
       "trim_fraction", "byzantine", "multi_krum_keep", "max_update_norm"}));
  StrategyConfig& st = c.strategy;
  FEDSILO_RETURN_IF_ERROR(strategy.Choice(
      "name", std::vector<std::string>(std::begin(kStrategyNames), std::end(kStrategyNames)),
      &st.name));
  FEDSILO_RETURN_IF_ERROR(
      strategy.Double("server_momentum", 0, false, 1, true, &st.server_momentum));
  // Each strategy's default step; an explicit server_learning_rate wins.
  if (st.name == "fedadam" || st.name == "fedyogi") st.server_learning_rate = 0.03;
  if (st.name == "fedadagrad") st.server_learning_rate = 0.1;
  if (st.name == "fedavgm") {
    st.server_learning_rate = std::round((1 - st.server_momentum) * 1e12) / 1e12;
  }
  FEDSILO_RETURN_IF_ERROR(
      strategy.Double("server_learning_rate", 0, true, 100, false, &st.server_learning_rate));
  FEDSILO_RETURN_IF_ERROR(strategy.Double("beta1", 0, false, 1, true, &st.beta1));
  FEDSILO_RETURN_IF_ERROR(strategy.Double("beta2", 0, false, 1, true, &st.beta2));
  FEDSILO_RETURN_IF_ERROR(strategy.Double("tau", 0, true, 10, false, &st.tau));
  FEDSILO_RETURN_IF_ERROR(strategy.Double("proximal_mu", 0, false, 1000, false, &st.proximal_mu));
  FEDSILO_RETURN_IF_ERROR(strategy.Double("trim_fraction", 0, false, 0.5, true, &st.trim_fraction));
  FEDSILO_RETURN_IF_ERROR(strategy.Int("byzantine", -1, 1000, &st.byzantine));
  FEDSILO_RETURN_IF_ERROR(strategy.Int("multi_krum_keep", 0, 10000, &st.multi_krum_keep));
  FEDSILO_RETURN_IF_ERROR(
      strategy.Double("max_update_norm", 0, false, 1e9, false, &st.max_update_norm));
  const int num_silos = SilosPerRound(c.federation);
  if (st.byzantine < 0) st.byzantine = std::max(0, (num_silos - 3) / 2);
  if ((st.name == "krum" || st.name == "multi_krum") && num_silos <= 2 * st.byzantine + 2) {
    return top.Error(strategy.Child("byzantine"), "strategy.byzantine",
                     absl::StrCat(st.name,
                                  " needs more than 2 x byzantine + 2 silos a round; the "
                                  "job has ",
                                  num_silos, " and byzantine is ", st.byzantine));
  }
  if (st.name == "multi_krum" && st.multi_krum_keep > num_silos - st.byzantine) {
    return top.Error(strategy.Child("multi_krum_keep"), "strategy.multi_krum_keep",
                     absl::StrCat("is ", st.multi_krum_keep, ", more than silos - byzantine (",
                                  num_silos - st.byzantine, ")"));
  }

  const Section privacy = top.Sub("privacy");
  FEDSILO_RETURN_IF_ERROR(privacy.CheckKeys({"dp", "secure_aggregation"}));
  const Section dp = privacy.Sub("dp");
  FEDSILO_RETURN_IF_ERROR(
      dp.CheckKeys({"mode", "noise_multiplier", "target_epsilon", "max_grad_norm", "delta",
                    "clip_norm", "adaptive_clipping", "target_quantile", "clip_learning_rate"}));
  std::string dp_mode = "none";
  FEDSILO_RETURN_IF_ERROR(dp.Choice("mode", {"none", "local", "central"}, &dp_mode));
  c.privacy.dp.mode = dp_mode == "local"     ? DpMode::kLocal
                      : dp_mode == "central" ? DpMode::kCentral
                                             : DpMode::kNone;
  DpConfig& d = c.privacy.dp;
  FEDSILO_RETURN_IF_ERROR(dp.Double("noise_multiplier", 0, false, 1e6, false, &d.noise_multiplier));
  FEDSILO_RETURN_IF_ERROR(dp.Double("target_epsilon", 0, false, 1e6, false, &d.target_epsilon));
  FEDSILO_RETURN_IF_ERROR(dp.Double("max_grad_norm", 0, true, 1e6, false, &d.max_grad_norm));
  FEDSILO_RETURN_IF_ERROR(dp.Double("delta", 0, true, 1, true, &d.delta));
  FEDSILO_RETURN_IF_ERROR(dp.Double("clip_norm", 0, true, 1e9, false, &d.clip_norm));
  FEDSILO_RETURN_IF_ERROR(dp.Bool("adaptive_clipping", &d.adaptive_clipping));
  FEDSILO_RETURN_IF_ERROR(dp.Double("target_quantile", 0, false, 1, false, &d.target_quantile));
  FEDSILO_RETURN_IF_ERROR(
      dp.Double("clip_learning_rate", 0, true, 10, false, &d.clip_learning_rate));
  if (d.mode == DpMode::kCentral && (d.noise_multiplier <= 0 || d.target_epsilon > 0)) {
    return top.Error(dp.Child("mode"), "privacy.dp",
                     "mode central needs noise_multiplier (> 0); target_epsilon is for local");
  }
  if (d.mode == DpMode::kCentral && c.strategy.name != "fedavg" && c.strategy.name != "fedprox") {
    // The noise is calibrated for the mean of clipped updates; added to a
    // server optimizer's step or to a robust rule's output it would promise a
    // guarantee it does not give.
    return top.Error(dp.Child("mode"), "privacy.dp.mode",
                     absl::StrCat("central adds its noise to the mean of the clipped updates, "
                                  "which strategy '", c.strategy.name,
                                  "' does not apply; use strategy fedavg or fedprox, or mode local"));
  }
  if (d.mode == DpMode::kLocal && (d.noise_multiplier > 0) == (d.target_epsilon > 0)) {
    return top.Error(dp.Child("mode"), "privacy.dp",
                     "mode local needs exactly one of noise_multiplier and target_epsilon "
                     "(> 0)");
  }
  if (d.mode == DpMode::kLocal && c.model.kind == ModelKind::kTorchScript) {
    return top.Error(dp.Child("mode"), "privacy.dp.mode",
                     "local (DP-SGD) does not support model.torchscript: per-example gradients "
                     "come from the built-in models' known layers; use a built-in model.name, or "
                     "mode central");
  }
  if (d.mode == DpMode::kNone && (d.noise_multiplier > 0 || d.target_epsilon > 0)) {
    return top.Error(dp.Child("mode"), "privacy.dp.mode",
                     "is none, but noise_multiplier or target_epsilon is set; say mode: local");
  }

  SecureAggregationConfig& sa = c.privacy.secure_aggregation;
  const YAML::Node secagg_node = privacy.Child("secure_aggregation");
  if (secagg_node && secagg_node.IsScalar()) {
    FEDSILO_RETURN_IF_ERROR(privacy.Bool("secure_aggregation", &sa.enabled));
  } else {
    const Section secagg = privacy.Sub("secure_aggregation");
    FEDSILO_RETURN_IF_ERROR(
        secagg.CheckKeys({"enabled", "threshold", "clip_range", "bits", "max_weight"}));
    sa.enabled = static_cast<bool>(secagg_node);  // a mapping turns it on
    FEDSILO_RETURN_IF_ERROR(secagg.Bool("enabled", &sa.enabled));
    FEDSILO_RETURN_IF_ERROR(secagg.Int("threshold", 0, 255, &sa.threshold));
    FEDSILO_RETURN_IF_ERROR(secagg.Double("clip_range", 0, true, 1e6, false, &sa.clip_range));
    FEDSILO_RETURN_IF_ERROR(secagg.Int("bits", 8, 30, &sa.bits));
    FEDSILO_RETURN_IF_ERROR(secagg.Double("max_weight", 1, false, 1e7, false, &sa.max_weight));
    if (sa.threshold == 1) {
      return top.Error(secagg.Child("threshold"), "privacy.secure_aggregation.threshold",
                       "must be 0 (automatic) or at least 2: the sum of one silo is its update");
    }
  }
  if (sa.enabled && sa.threshold > static_cast<int>(c.federation.silos.size())) {
    return top.Error(privacy.Child("secure_aggregation"), "privacy.secure_aggregation.threshold",
                     absl::StrCat("is ", sa.threshold, ", more than the job's ",
                                  c.federation.silos.size(), " silos"));
  }
  if (sa.enabled && sa.threshold > 0 && sa.threshold < c.federation.min_silos) {
    return top.Error(
        privacy.Child("secure_aggregation"), "privacy.secure_aggregation.threshold",
        absl::StrCat("is ", sa.threshold, ", below federation.min_silos (", c.federation.min_silos,
                     "): a sum could be over fewer silos, and silos refuse it"));
  }
  if (sa.enabled && sa.threshold > 0 && 2 * sa.threshold <= SilosPerRound(c.federation)) {
    return top.Error(privacy.Child("secure_aggregation"), "privacy.secure_aggregation.threshold",
                     absl::StrCat("is ", sa.threshold, ", not more than half of the ",
                                  SilosPerRound(c.federation),
                                  " silos sampled each round; silos refuse it (the orchestrator "
                                  "could then show them two lists of survivors). Use at least ",
                                  SilosPerRound(c.federation) / 2 + 1, ", or 0 (two thirds)"));
  }
  if (c.strategy.name == "scaffold" && c.training.optimizer != OptimizerKind::kSgd) {
    return top.Error(
        strategy.Child("name"), "strategy.name",
        "scaffold needs training.optimizer sgd: its control variates assume SGD steps");
  }
  if (c.strategy.name == "scaffold" && (d.mode != DpMode::kNone || sa.enabled)) {
    return top.Error(strategy.Child("name"), "strategy.name",
                     "scaffold is not supported with privacy.dp or secure_aggregation: its "
                     "control variates are sent unprotected");
  }
  if (sa.enabled && StrategyNeedsAllUpdates(c.strategy.name)) {
    return top.Error(privacy.Child("secure_aggregation"), "privacy.secure_aggregation",
                     absl::StrCat("strategy '", c.strategy.name,
                                  "' needs every silo's update, and secure aggregation reveals "
                                  "only their sum; use fedavg, fedavgm, fedprox or an adaptive "
                                  "optimizer"));
  }
  if (sa.enabled && c.federation.silos.size() < 2) {
    return top.Error(privacy.Child("secure_aggregation"), "privacy.secure_aggregation",
                     "needs at least 2 silos: the sum of one silo is its update");
  }

  const Section checkpoint = top.Sub("checkpoint");
  FEDSILO_RETURN_IF_ERROR(checkpoint.CheckKeys({"every"}));
  FEDSILO_RETURN_IF_ERROR(checkpoint.Int("every", 0, 100000, &c.checkpoint.every));

  const Section tracking = top.Sub("tracking");
  FEDSILO_RETURN_IF_ERROR(tracking.CheckKeys({"mlflow"}));
  const Section mlflow = tracking.Sub("mlflow");
  FEDSILO_RETURN_IF_ERROR(mlflow.CheckKeys({"uri", "experiment", "log_model", "wait"}));
  MlflowConfig& ml = c.tracking.mlflow;
  FEDSILO_RETURN_IF_ERROR(mlflow.String("uri", &ml.uri));
  FEDSILO_RETURN_IF_ERROR(mlflow.String("experiment", &ml.experiment));
  FEDSILO_RETURN_IF_ERROR(mlflow.Bool("log_model", &ml.log_model));
  FEDSILO_RETURN_IF_ERROR(mlflow.Int("wait", 0, 86400, &ml.wait));
  if (!ml.uri.empty() && !absl::StartsWith(ml.uri, "http://") &&
      !absl::StartsWith(ml.uri, "https://")) {
    return top.Error(mlflow.Child("uri"), "tracking.mlflow.uri",
                     absl::StrCat("'", ml.uri,
                                  "' is not an MLflow tracking server's address "
                                  "(http://host:port or https://host:port)"));
  }
  if (ml.uri.empty() &&
      (mlflow.Child("experiment") || mlflow.Child("log_model") || mlflow.Child("wait"))) {
    return top.Error(tracking.Child("mlflow"), "tracking.mlflow.uri",
                     "is required when tracking.mlflow is set");
  }

  if (c.data.partition == PartitionScheme::kShards && c.federation.silos.size() > 1000) {
    return top.Error(root, "data.partition", "shards needs at most 1000 silos");
  }
  return c;
}
}  // namespace

StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                  const std::vector<ConfigOverride>& overrides) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  FEDSILO_ASSIGN_OR_RETURN(JobConfig config, ParseJobConfig(text, path, overrides));
  if (config.name.empty()) config.name = std::filesystem::path(path).stem().string();
  // From the file: beside the file. From --set: from where the command runs.
  const auto resolve = [&](const std::string& key, std::string& value,
                           absl::string_view what) -> Status {
    if (value.empty()) return absl::OkStatus();
    bool from_flag = false;
    for (const ConfigOverride& o : overrides) from_flag = from_flag || o.key == key;
    std::filesystem::path p(value);
    if (p.is_relative() && !from_flag) p = std::filesystem::path(path).parent_path() / p;
    std::error_code ec;
    const std::filesystem::path absolute = std::filesystem::absolute(p, ec).lexically_normal();
    if (ec || !std::filesystem::is_regular_file(absolute, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(from_flag ? "--set " + key : path + ": " + key,
                                                     ": ", absolute.string(), ": no such file (",
                                                     what, ")"));
    }
    value = absolute.string();
    return absl::OkStatus();
  };
  FEDSILO_RETURN_IF_ERROR(resolve("model.torchscript", config.model.torchscript,
                                  "a TorchScript module saved with torch.jit.save"));
  FEDSILO_RETURN_IF_ERROR(
      resolve("data.catalog", config.data.catalog, "a dataset catalog, datasets.yaml"));
  return config;
}

namespace {
// The shortest text that reads back as the same double ("0.05", not
// "0.050000000000000003").
std::string Num(double value) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::vector<std::string> Nums(const std::vector<double>& values) {
  std::vector<std::string> out;
  out.reserve(values.size());
  for (double v : values) out.push_back(Num(v));
  return out;
}

void EmitPreprocess(const PreprocessConfig& p, YAML::Emitter& out) {
  out << YAML::Key << "preprocess" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "scale" << YAML::Value << std::string(ScaleKindName(p.scale));
  if (!p.categories.empty()) {
    out << YAML::Key << "categories" << YAML::Value << YAML::BeginMap;
    for (const auto& [column, values] : p.categories) {
      out << YAML::Key << column << YAML::Value << YAML::Flow << values;
    }
    out << YAML::EndMap;
  }
  if (!p.statistics.empty()) {
    const FeatureStatistics& st = p.statistics;
    out << YAML::Key << "statistics" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "label" << YAML::Value << st.label;
    out << YAML::Key << "rows" << YAML::Value << st.rows;
    out << YAML::Key << "class_counts" << YAML::Value << YAML::Flow << st.class_counts;
    out << YAML::Key << "features" << YAML::Value << YAML::Flow << st.features;
    out << YAML::Key << "count" << YAML::Value << YAML::Flow << st.count;
    out << YAML::Key << "mean" << YAML::Value << YAML::Flow << Nums(st.mean);
    out << YAML::Key << "std" << YAML::Value << YAML::Flow << Nums(st.std);
    if (st.has_min_max()) {
      out << YAML::Key << "min" << YAML::Value << YAML::Flow << Nums(st.min);
      out << YAML::Key << "max" << YAML::Value << YAML::Flow << Nums(st.max);
    }
    if (!st.shape.empty()) out << YAML::Key << "shape" << YAML::Value << YAML::Flow << st.shape;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}
}  // namespace

std::string JobConfigToYaml(const JobConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (!c.name.empty()) out << YAML::Key << "name" << YAML::Value << c.name;
  out << YAML::Key << "experiment" << YAML::Value << c.experiment;
  out << YAML::Key << "seed" << YAML::Value << c.seed;
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dataset" << YAML::Value << c.data.dataset;
  if (!c.data.catalog.empty()) out << YAML::Key << "catalog" << YAML::Value << c.data.catalog;
  out << YAML::Key << "test_fraction" << YAML::Value << Num(c.data.test_fraction);
  out << YAML::Key << "silo_test_fraction" << YAML::Value << Num(c.data.silo_test_fraction);
  out << YAML::Key << "partition" << YAML::Value
      << std::string(PartitionSchemeName(c.data.partition));
  out << YAML::Key << "alpha" << YAML::Value << Num(c.data.alpha);
  out << YAML::Key << "shards_per_silo" << YAML::Value << c.data.shards_per_silo;
  out << YAML::EndMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << std::string(ModelKindName(c.model.kind));
  if (c.model.kind == ModelKind::kTorchScript) {
    out << YAML::Key << "torchscript" << YAML::Value << c.model.torchscript;
  } else {
    out << YAML::Key << "hidden" << YAML::Value << YAML::Flow << c.model.hidden;
  }
  out << YAML::EndMap;
  if (!c.preprocess.empty()) EmitPreprocess(c.preprocess, out);
  out << YAML::Key << "training" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "rounds" << YAML::Value << c.training.rounds;
  out << YAML::Key << "local_epochs" << YAML::Value << c.training.local_epochs;
  out << YAML::Key << "batch_size" << YAML::Value << c.training.batch_size;
  out << YAML::Key << "optimizer" << YAML::Value
      << std::string(OptimizerKindName(c.training.optimizer));
  out << YAML::Key << "learning_rate" << YAML::Value << Num(c.training.learning_rate);
  out << YAML::Key << "momentum" << YAML::Value << Num(c.training.momentum);
  out << YAML::Key << "weight_decay" << YAML::Value << Num(c.training.weight_decay);
  out << YAML::EndMap;
  out << YAML::Key << "federation" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "silos" << YAML::Value << YAML::Flow << c.federation.silos;
  out << YAML::Key << "fraction" << YAML::Value << Num(c.federation.fraction);
  out << YAML::Key << "min_silos" << YAML::Value << c.federation.min_silos;
  out << YAML::Key << "round_timeout" << YAML::Value << c.federation.round_timeout;
  out << YAML::Key << "wait_for_silos" << YAML::Value << c.federation.wait_for_silos;
  out << YAML::Key << "round_retries" << YAML::Value << c.federation.round_retries;
  out << YAML::EndMap;
  out << YAML::Key << "strategy" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.strategy.name;
  out << YAML::Key << "server_learning_rate" << YAML::Value << Num(c.strategy.server_learning_rate);
  out << YAML::Key << "server_momentum" << YAML::Value << Num(c.strategy.server_momentum);
  out << YAML::Key << "beta1" << YAML::Value << Num(c.strategy.beta1);
  out << YAML::Key << "beta2" << YAML::Value << Num(c.strategy.beta2);
  out << YAML::Key << "tau" << YAML::Value << Num(c.strategy.tau);
  out << YAML::Key << "proximal_mu" << YAML::Value << Num(c.strategy.proximal_mu);
  out << YAML::Key << "trim_fraction" << YAML::Value << Num(c.strategy.trim_fraction);
  out << YAML::Key << "byzantine" << YAML::Value << c.strategy.byzantine;
  out << YAML::Key << "multi_krum_keep" << YAML::Value << c.strategy.multi_krum_keep;
  out << YAML::Key << "max_update_norm" << YAML::Value << Num(c.strategy.max_update_norm);
  out << YAML::EndMap;
  out << YAML::Key << "privacy" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dp" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "mode" << YAML::Value << std::string(DpModeName(c.privacy.dp.mode));
  out << YAML::Key << "noise_multiplier" << YAML::Value << Num(c.privacy.dp.noise_multiplier);
  out << YAML::Key << "target_epsilon" << YAML::Value << Num(c.privacy.dp.target_epsilon);
  out << YAML::Key << "max_grad_norm" << YAML::Value << Num(c.privacy.dp.max_grad_norm);
  out << YAML::Key << "delta" << YAML::Value << Num(c.privacy.dp.delta);
  out << YAML::Key << "clip_norm" << YAML::Value << Num(c.privacy.dp.clip_norm);
  out << YAML::Key << "adaptive_clipping" << YAML::Value << c.privacy.dp.adaptive_clipping;
  out << YAML::Key << "target_quantile" << YAML::Value << Num(c.privacy.dp.target_quantile);
  out << YAML::Key << "clip_learning_rate" << YAML::Value << Num(c.privacy.dp.clip_learning_rate);
  out << YAML::EndMap;
  const SecureAggregationConfig& sa = c.privacy.secure_aggregation;
  out << YAML::Key << "secure_aggregation" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << sa.enabled;
  out << YAML::Key << "threshold" << YAML::Value << sa.threshold;
  out << YAML::Key << "clip_range" << YAML::Value << Num(sa.clip_range);
  out << YAML::Key << "bits" << YAML::Value << sa.bits;
  out << YAML::Key << "max_weight" << YAML::Value << Num(sa.max_weight);
  out << YAML::EndMap;
  out << YAML::EndMap;
  out << YAML::Key << "checkpoint" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "every" << YAML::Value << c.checkpoint.every;
  out << YAML::EndMap;
  if (!c.tracking.mlflow.uri.empty()) {
    const MlflowConfig& ml = c.tracking.mlflow;
    out << YAML::Key << "tracking" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "mlflow" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "uri" << YAML::Value << ml.uri;
    if (!ml.experiment.empty()) out << YAML::Key << "experiment" << YAML::Value << ml.experiment;
    out << YAML::Key << "log_model" << YAML::Value << ml.log_model;
    out << YAML::Key << "wait" << YAML::Value << ml.wait;
    out << YAML::EndMap;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

namespace {
void Flatten(const YAML::Node& node, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      Flatten(kv.second, prefix.empty() ? key : absl::StrCat(prefix, ".", key), out);
    }
    return;
  }
  if (node.IsScalar()) {
    out.emplace_back(prefix, node.Scalar());
    return;
  }
  YAML::Emitter flow;
  flow << YAML::Flow << node;
  out.emplace_back(prefix, flow.c_str());
}
}  // namespace

std::vector<std::pair<std::string, std::string>> FlattenJobConfig(const JobConfig& config) {
  std::vector<std::pair<std::string, std::string>> out;
  Flatten(YAML::Load(JobConfigToYaml(config)), "", out);
  return out;
}

}  // namespace fedsilo
