#include "core/job_schema.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/yaml_util.h"

namespace fedsilo {
namespace {

constexpr int64_t kNoMax = std::numeric_limits<int64_t>::max();

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

// "training" for "training.rounds", "" for "seed".
std::string SectionOf(absl::string_view path) {
  const size_t dot = path.rfind('.');
  return dot == absl::string_view::npos ? "" : std::string(path.substr(0, dot));
}

std::string LeafOf(absl::string_view path) {
  const size_t dot = path.rfind('.');
  return std::string(dot == absl::string_view::npos ? path : path.substr(dot + 1));
}

// Reads one YAML mapping, reporting errors as "<source>:<line>: <path>: ...",
// or "--set <path>: ..." for a value that came from the command line.
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

  template <typename T>
  Status Int(const std::string& key, int64_t min, int64_t max, T* out) const {
    YAML::Node n = Child(key);
    if (!n) return absl::OkStatus();
    int64_t value = 0;
    const std::string range =
        max == kNoMax ? absl::StrCat(">= ", min) : absl::StrCat("in [", min, ", ", max, "]");
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, value)) {
      return Error(n, Join(key), absl::StrCat("must be an integer ", range, ", got ", Show(n)));
    }
    if (value < min || value > max) {
      return Error(n, Join(key), absl::StrCat("must be an integer ", range, ", got ", value));
    }
    *out = static_cast<T>(value);
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
    return BoolAt(Child(key), Join(key), out);
  }

  // The node itself as a bool (a section given as a shorthand value).
  Status BoolAt(const YAML::Node& n, const std::string& path, bool* out) const {
    if (!n) return absl::OkStatus();
    bool value = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, value)) {
      return Error(n, path, absl::StrCat("must be true or false, got ", Show(n)));
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

  // A string that must be one of `allowed`.
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

// A job's YAML, section by section.
class Reader {
 public:
  Reader(const YAML::Node& root, const std::string& source, const std::set<std::string>& overridden)
      : root_(root, "", source, overridden) {}

  // The section at a dotted path ("" is the document).
  const Section& At(const std::string& path) const {
    if (path.empty()) return root_;
    auto it = sections_.find(path);
    if (it == sections_.end()) {
      const Section& parent = At(SectionOf(path));
      it = sections_.emplace(path, std::make_unique<Section>(parent.Sub(LeafOf(path)))).first;
    }
    return *it->second;
  }

  // The node at a dotted key; invalid when it is absent.
  YAML::Node Node(const std::string& path) const {
    return path.empty() ? root_.node() : At(SectionOf(path)).Child(LeafOf(path));
  }
  bool Given(const std::string& path) const { return static_cast<bool>(Node(path)); }

  // InvalidArgument about `key`, at the line of the node at `at`.
  Status Error(const std::string& at, const std::string& key, absl::string_view message) const {
    return root_.Error(Node(at), key, message);
  }

 private:
  Section root_;
  mutable std::map<std::string, std::unique_ptr<Section>> sections_;
};

// One key of the table: what the reference says, and how it is read and
// written.
struct Key : JobKeyInfo {
  // Its section may be given as this key's value
  // (`secure_aggregation: true` for `secure_aggregation: {enabled: true}`).
  bool shorthand = false;
  // Reads the key into the job; leaves the default when it is absent.
  std::function<Status(const Reader&, JobConfig&)> read;
  // Whether the resolved job writes it (null: always).
  std::function<bool(const JobConfig&)> present;
  // Writes the value.
  std::function<void(const JobConfig&, YAML::Emitter&)> write;

  Key Default(std::string text) && {
    fallback = std::move(text);
    return std::move(*this);
  }
  Key Allowed(std::string text) && {
    allowed = std::move(text);
    return std::move(*this);
  }
  Key Since(int version) && {
    since = version;
    return std::move(*this);
  }
  Key PresentIf(std::function<bool(const JobConfig&)> when) && {
    present = std::move(when);
    return std::move(*this);
  }
};

Key Base(std::string path, std::string type, std::string help) {
  Key k;
  k.path = std::move(path);
  k.type = std::move(type);
  k.help = std::move(help);
  return k;
}

std::string IntRange(int64_t min, int64_t max) {
  return max == kNoMax ? absl::StrCat("≥ ", min) : absl::StrCat(min, "–", max);
}

std::string NumberRange(double min, bool min_open, double max, bool max_open) {
  if (std::isinf(max)) return absl::StrCat(min_open ? "> " : "≥ ", Num(min));
  return absl::StrCat(min_open ? "(" : "[", Num(min), ", ", Num(max), max_open ? ")" : "]");
}

std::string Quoted(const std::vector<std::string>& values) {
  std::vector<std::string> quoted;
  for (const std::string& v : values) quoted.push_back(absl::StrCat("`", v, "`"));
  return absl::StrJoin(quoted, ", ");
}

// `field` is a generic lambda giving the member: [](auto& c) -> auto& {...}.
template <typename F>
Key IntKey(std::string path, F field, int64_t min, int64_t max, std::string help) {
  Key k = Base(std::move(path), "integer", std::move(help));
  k.allowed = IntRange(min, max);
  k.read = [section = SectionOf(k.path), leaf = LeafOf(k.path), field, min, max](const Reader& r,
                                                                                 JobConfig& c) {
    return r.At(section).Int(leaf, min, max, &field(c));
  };
  k.write = [field](const JobConfig& c, YAML::Emitter& out) { out << field(c); };
  return k;
}

template <typename F>
Key NumberKey(std::string path, F field, double min, bool min_open, double max, bool max_open,
              std::string help) {
  Key k = Base(std::move(path), "number", std::move(help));
  k.allowed = NumberRange(min, min_open, max, max_open);
  k.read = [section = SectionOf(k.path), leaf = LeafOf(k.path), field, min, min_open, max,
            max_open](const Reader& r, JobConfig& c) {
    return r.At(section).Double(leaf, min, min_open, max, max_open, &field(c));
  };
  k.write = [field](const JobConfig& c, YAML::Emitter& out) { out << Num(field(c)); };
  return k;
}

template <typename F>
Key BoolKey(std::string path, F field, std::string help) {
  Key k = Base(std::move(path), "bool", std::move(help));
  k.read = [section = SectionOf(k.path), leaf = LeafOf(k.path), field](
               const Reader& r, JobConfig& c) { return r.At(section).Bool(leaf, &field(c)); };
  k.write = [field](const JobConfig& c, YAML::Emitter& out) { out << field(c); };
  return k;
}

// A non-empty string; written only when it is not empty.
template <typename F>
Key StringKey(std::string path, F field, std::string help, std::string type = "string") {
  Key k = Base(std::move(path), std::move(type), std::move(help));
  k.read = [section = SectionOf(k.path), leaf = LeafOf(k.path), field](
               const Reader& r, JobConfig& c) { return r.At(section).String(leaf, &field(c)); };
  k.present = [field](const JobConfig& c) { return !field(c).empty(); };
  k.write = [field](const JobConfig& c, YAML::Emitter& out) { out << field(c); };
  return k;
}

// One of `values`, each named by `name`.
template <typename F, typename Enum>
Key EnumKey(std::string path, F field, std::vector<Enum> values, absl::string_view (*name)(Enum),
            std::string help) {
  std::vector<std::string> names;
  for (Enum v : values) names.emplace_back(name(v));
  Key k = Base(std::move(path), "string", std::move(help));
  k.allowed = Quoted(names);
  k.read = [section = SectionOf(k.path), leaf = LeafOf(k.path), field, values, name, names](
               const Reader& r, JobConfig& c) -> Status {
    std::string chosen(name(field(c)));
    FEDSILO_RETURN_IF_ERROR(r.At(section).Choice(leaf, names, &chosen));
    for (Enum v : values) {
      if (name(v) == chosen) field(c) = v;
    }
    return absl::OkStatus();
  };
  k.write = [field, name](const JobConfig& c, YAML::Emitter& out) {
    out << std::string(name(field(c)));
  };
  return k;
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

// ---------------------------------------------------------------------------
// Keys that read or write more than one value.

Status ReadDataset(const Reader& r, JobConfig& c) {
  const Section& data = r.At("data");
  if (!data.Child("dataset")) {
    return r.Error(
        "", "data.dataset",
        absl::StrCat("is required: a built-in data set (", absl::StrJoin(kKnownDatasets, ", "),
                     ") or a name in the silos' dataset catalogs"));
  }
  FEDSILO_RETURN_IF_ERROR(data.String("dataset", &c.data.dataset));
  if (IsBuiltinDataset(c.data.dataset)) return absl::OkStatus();
  const std::vector<std::string> builtin(std::begin(kKnownDatasets), std::end(kKnownDatasets));
  const std::string nearest = NearestName(c.data.dataset, builtin);
  if (!nearest.empty()) {
    return data.Error(data.Child("dataset"), "data.dataset",
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
  return absl::OkStatus();
}

// A list of layer widths at `section`.`leaf`, e.g. [200, 200].
Status ReadWidths(const Reader& r, const std::string& section, const std::string& leaf,
                  std::vector<int>* widths) {
  const Section& at = r.At(section);
  YAML::Node list = at.Child(leaf);
  if (!list) return absl::OkStatus();
  const std::string path = absl::StrCat(section, ".", leaf);
  if (!list.IsSequence()) {
    return at.Error(list, path, "must be a list of layer widths, e.g. [200, 200]");
  }
  widths->clear();
  for (const auto& item : list) {
    int width = 0;
    if (!item.IsScalar() || !YAML::convert<int>::decode(item, width) || width < 1 ||
        width > 100000) {
      return at.Error(item, path, "each layer width must be an integer in [1, 100000]");
    }
    widths->push_back(width);
  }
  return absl::OkStatus();
}

Status ReadHidden(const Reader& r, JobConfig& c) {
  return ReadWidths(r, "model", "hidden", &c.model.hidden);
}

Status ReadCategories(const Reader& r, JobConfig& c) {
  const Section& pre = r.At("preprocess");
  YAML::Node categories = pre.Child("categories");
  if (!categories) return absl::OkStatus();
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
      if (!seen.insert(v).second)
        return pre.Error(kv.second, key, absl::StrCat("lists '", v, "' twice"));
    }
    c.preprocess.categories.emplace_back(column, std::move(values));
  }
  return absl::OkStatus();
}

void WriteCategories(const JobConfig& c, YAML::Emitter& out) {
  out << YAML::BeginMap;
  for (const auto& [column, values] : c.preprocess.categories) {
    out << YAML::Key << column << YAML::Value << YAML::Flow << values;
  }
  out << YAML::EndMap;
}

Status ReadStatistics(const Section& s, FeatureStatistics* out) {
  FEDSILO_RETURN_IF_ERROR(s.CheckKeys({"label", "rows", "class_counts", "features", "count", "mean",
                                       "std", "min", "max", "shape"}));
  FeatureStatistics st;
  FEDSILO_RETURN_IF_ERROR(s.String("label", &st.label));
  FEDSILO_RETURN_IF_ERROR(s.Int("rows", 0, kNoMax, &st.rows));
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

void WriteStatistics(const JobConfig& c, YAML::Emitter& out) {
  const FeatureStatistics& st = c.preprocess.statistics;
  out << YAML::BeginMap;
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

Status ReadSilos(const Reader& r, JobConfig& c) {
  const Section& fed = r.At("federation");
  FederationConfig* out = &c.federation;
  YAML::Node n = fed.Child("silos");
  if (!n) {
    return fed.Error(fed.node(), "federation.silos", "is required (a count or a list of names)");
  }
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

// `privacy.secure_aggregation: true`, or a mapping, which turns it on unless
// it says `enabled: false`.
Status ReadSecureAggregationEnabled(const Reader& r, JobConfig& c) {
  const Section& secagg = r.At("privacy.secure_aggregation");
  bool& enabled = c.privacy.secure_aggregation.enabled;
  if (secagg.node() && secagg.node().IsScalar()) {
    return secagg.BoolAt(secagg.node(), "privacy.secure_aggregation", &enabled);
  }
  enabled = static_cast<bool>(secagg.node());
  return secagg.Bool("enabled", &enabled);
}

// ---------------------------------------------------------------------------
// The table.

// The run's name and seed, and the data.
void DataKeys(std::vector<Key>& k) {
  k.push_back(StringKey(
                  "name", [](auto& c) -> auto& { return c.name; },
                  "names the run (`runs/<name>-<time>-<id>`)")
                  .Default("file name without `.yaml`"));
  k.push_back(StringKey(
                  "experiment", [](auto& c) -> auto& { return c.experiment; },
                  "groups runs for comparison (see [tracking runs](tracking.md#tracking-runs))")
                  .PresentIf(nullptr));  // written always, "default" included
  k.push_back(IntKey(
      "seed", [](auto& c) -> auto& { return c.seed; }, 0, kNoMax,
      "seeds the split, the partition, the initial model, sampling and shuffling"));
  k.push_back(EnumKey(
                  "kind", [](auto& c) -> auto& { return c.kind; },
                  std::vector<JobKind>{JobKind::kHorizontal, JobKind::kVertical}, &JobKindName,
                  "`horizontal`: silos hold the same columns about different people; "
                  "`vertical`: they hold different columns about the same people (see "
                  "[vertical jobs](vertical.md))")
                  .Default("`horizontal`")
                  .Since(3)
                  .PresentIf([](const JobConfig& c) { return c.kind != JobKind::kHorizontal; }));

  Key dataset = Base("data.dataset", "string",
                     "the data set, by name (see [your own "
                     "data](data.md#your-own-data-csv-files-in-each-silo))");
  dataset.fallback = "**required**";
  dataset.allowed = absl::StrCat(Quoted({std::begin(kKnownDatasets), std::end(kKnownDatasets)}),
                                 ", or a name in the silos' catalogs");
  dataset.read = ReadDataset;
  dataset.write = [](const JobConfig& c, YAML::Emitter& out) { out << c.data.dataset; };
  k.push_back(std::move(dataset));
  k.push_back(StringKey(
                  "data.catalog", [](auto& c) -> auto& { return c.data.catalog; },
                  "simulation only: the catalog every simulated silo reads (`{silo}` in a "
                  "path becomes the silo's name); relative to the job file",
                  "path")
                  .Allowed("an existing dataset catalog"));
  k.push_back(NumberKey(
      "data.test_fraction", [](auto& c) -> auto& { return c.data.test_fraction; }, 0, true, 1, true,
      "share held out as the global test set (`digits`, `breast_cancer`; MNIST "
      "uses its own 10 000-image test set)"));
  k.push_back(NumberKey(
      "data.silo_test_fraction", [](auto& c) -> auto& { return c.data.silo_test_fraction; }, 0,
      false, 1, true, "share of each silo's partition kept as that silo's local test set"));
  k.push_back(EnumKey(
      "data.partition", [](auto& c) -> auto& { return c.data.partition; },
      std::vector<PartitionScheme>{PartitionScheme::kIid, PartitionScheme::kDirichlet,
                                   PartitionScheme::kShards},
      &PartitionSchemeName,
      "how the training set is split across silos (see "
      "[partitioning](strategies.md#partitioning-across-silos))"));
  k.push_back(NumberKey(
      "data.alpha", [](auto& c) -> auto& { return c.data.alpha; }, 0, true, INFINITY, false,
      "Dirichlet concentration: smaller = more label skew"));
  k.push_back(IntKey(
      "data.shards_per_silo", [](auto& c) -> auto& { return c.data.shards_per_silo; }, 1, 1000,
      "shards given to each silo"));
}

// The model, and how tabular data is prepared for it.
void ModelKeys(std::vector<Key>& k) {
  k.push_back(EnumKey(
      "model.name", [](auto& c) -> auto& { return c.model.kind; },
      std::vector<ModelKind>{ModelKind::kLogistic, ModelKind::kMlp, ModelKind::kCnn,
                             ModelKind::kTorchScript},
      &ModelKindName, "the built-in model, or `torchscript` with `model.torchscript`"));
  Key hidden = Base("model.hidden", "list of integers", "MLP hidden layer widths");
  hidden.allowed = "each 1–100000";
  hidden.read = ReadHidden;
  hidden.present = [](const JobConfig& c) { return c.model.kind != ModelKind::kTorchScript; };
  hidden.write = [](const JobConfig& c, YAML::Emitter& out) {
    out << YAML::Flow << c.model.hidden;
  };
  k.push_back(std::move(hidden));
  k.push_back(StringKey(
                  "model.torchscript", [](auto& c) -> auto& { return c.model.torchscript; },
                  "your own model instead of a built-in one (see "
                  "[your own model](models.md#your-own-model-torchscript))",
                  "path")
                  .Allowed("an existing TorchScript file"));

  const auto preprocessing = [](const JobConfig& c) { return !c.preprocess.empty(); };
  k.push_back(
      EnumKey(
          "preprocess.scale", [](auto& c) -> auto& { return c.preprocess.scale; },
          std::vector<ScaleKind>{ScaleKind::kNone, ScaleKind::kStandard, ScaleKind::kMinMax},
          &ScaleKindName,
          "CSV datasets: scale each feature with the federation's statistics — "
          "`standard`: (x − mean) / deviation; `minmax`: (x − min) / (max − min)")
          .PresentIf(preprocessing));
  Key categories = Base("preprocess.categories", "mapping",
                        "CSV datasets: the one-hot vocabulary of each categorical column, the "
                        "same for every silo");
  categories.allowed = "column → list of values";
  categories.read = ReadCategories;
  categories.present = [](const JobConfig& c) { return !c.preprocess.categories.empty(); };
  categories.write = WriteCategories;
  k.push_back(std::move(categories));
  Key statistics =
      Base("preprocess.statistics", "mapping",
           "CSV datasets: the federated statistics (`label`, `rows`, `class_counts`, "
           "`features`, `count`, `mean`, `std`, `min`, `max`); computed before round "
           "1 and written into the run's `job.yaml` — give them only to reuse a run's");
  statistics.fallback = "filled in";
  statistics.read = [](const Reader& r, JobConfig& c) -> Status {
    if (!r.Given("preprocess.statistics")) return absl::OkStatus();
    return ReadStatistics(r.At("preprocess.statistics"), &c.preprocess.statistics);
  };
  statistics.present = [](const JobConfig& c) { return !c.preprocess.statistics.empty(); };
  statistics.write = WriteStatistics;
  k.push_back(std::move(statistics));
}

// Local training and the federation.
void TrainingKeys(std::vector<Key>& k) {
  k.push_back(IntKey(
      "training.rounds", [](auto& c) -> auto& { return c.training.rounds; }, 1, 100000,
      "federated rounds"));
  k.push_back(IntKey(
      "training.local_epochs", [](auto& c) -> auto& { return c.training.local_epochs; }, 1, 10000,
      "passes over its data each silo makes per round"));
  k.push_back(IntKey(
      "training.batch_size", [](auto& c) -> auto& { return c.training.batch_size; }, 1, 1000000,
      "minibatch size of local training"));
  k.push_back(EnumKey(
      "training.optimizer", [](auto& c) -> auto& { return c.training.optimizer; },
      std::vector<OptimizerKind>{OptimizerKind::kSgd, OptimizerKind::kAdam}, &OptimizerKindName,
      "local optimizer (fresh every round)"));
  k.push_back(NumberKey(
      "training.learning_rate", [](auto& c) -> auto& { return c.training.learning_rate; }, 0, true,
      100, false, "local learning rate (of round 1, with `lr_decay`)"));
  k.push_back(NumberKey(
      "training.momentum", [](auto& c) -> auto& { return c.training.momentum; }, 0, false, 1, true,
      "SGD momentum"));
  k.push_back(NumberKey(
      "training.weight_decay", [](auto& c) -> auto& { return c.training.weight_decay; }, 0, false,
      1, false, "L2 weight decay (SGD and Adam)"));
  k.push_back(NumberKey(
                  "training.lr_decay", [](auto& c) -> auto& { return c.training.lr_decay; }, 0,
                  true, 1, false,
                  "round r trains with `learning_rate` × `lr_decay`^(r − 1); 1 keeps the "
                  "rate; the last round's rate must stay above a millionth of `learning_rate`")
                  .Since(2));

  Key silos = Base("federation.silos", "integer or list",
                   "`5` means `silo-1` … `silo-5`; a list names them");
  silos.fallback = "**required**";
  silos.allowed = "1–10000, or unique names of letters, digits, `-_.`";
  silos.read = ReadSilos;
  silos.write = [](const JobConfig& c, YAML::Emitter& out) {
    out << YAML::Flow << c.federation.silos;
  };
  k.push_back(std::move(silos));
  k.push_back(NumberKey(
      "federation.fraction", [](auto& c) -> auto& { return c.federation.fraction; }, 0, true, 1,
      false, "share of silos sampled each round (at least `min_silos`)"));
  k.push_back(IntKey(
                  "federation.min_silos", [](auto& c) -> auto& { return c.federation.min_silos; },
                  1, 10000, "a round fails if fewer silos return a valid update")
                  .Allowed("1 – number of silos"));
  k.push_back(IntKey(
      "federation.round_timeout", [](auto& c) -> auto& { return c.federation.round_timeout; }, 1,
      7 * 24 * 3600,
      "seconds a silo process may take for one round (`--processes` and the real "
      "federation); a silo that takes longer is dropped from the round"));
  k.push_back(IntKey(
      "federation.wait_for_silos", [](auto& c) -> auto& { return c.federation.wait_for_silos; }, 1,
      7 * 24 * 3600,
      "seconds a job waits for its silos to connect; then `run --processes` fails "
      "naming the missing ones, and the orchestrator starts without them if "
      "`min_silos` are there, else fails naming them (status printed every 5 s, "
      "logged every 10 s)"));
  k.push_back(IntKey(
      "federation.round_retries", [](auto& c) -> auto& { return c.federation.round_retries; }, 0,
      100,
      "times a round is run again when silos left or timed out before it was "
      "aggregated, from the same global model, once its sampled silos are back "
      "(waiting up to `wait_for_silos`; a silo not back by then fails the job); "
      "with `min_silos` equal to all silos, the job then ends with exactly the "
      "model of a run nobody left. Not for `scaffold` (its silos keep state "
      "between rounds) nor under `privacy.dp.mode: local` (each attempt would be "
      "charged to the silos' budgets, past the run's plan)"));
}

// Aggregation.
void StrategyKeys(std::vector<Key>& k) {
  Key strategy = Base("strategy.name", "string",
                      "aggregation strategy (see [strategies](strategies.md#strategies))");
  std::vector<std::string> strategies;
  for (const StrategyTraits& s : kStrategies) strategies.emplace_back(s.name);
  strategy.fallback = "`fedavg`";
  strategy.allowed = Quoted(strategies);
  strategy.read = [strategies](const Reader& r, JobConfig& c) {
    return r.At("strategy").Choice("name", strategies, &c.strategy.name);
  };
  strategy.write = [](const JobConfig& c, YAML::Emitter& out) { out << c.strategy.name; };
  k.push_back(std::move(strategy));
  k.push_back(NumberKey(
                  "strategy.server_learning_rate",
                  [](auto& c) -> auto& { return c.strategy.server_learning_rate; }, 0, true, 100,
                  false,
                  "new global = global + rate × the strategy's step; 1.0 with fedavg is "
                  "plain FedAvg")
                  .Default("`1`; `0.03` fedadam/fedyogi, `0.1` fedadagrad, `1 − server_momentum` "
                           "fedavgm"));
  k.push_back(NumberKey(
      "strategy.server_momentum", [](auto& c) -> auto& { return c.strategy.server_momentum; }, 0,
      false, 1, true, "fedavgm: momentum of the server's velocity"));
  k.push_back(NumberKey(
      "strategy.beta1", [](auto& c) -> auto& { return c.strategy.beta1; }, 0, false, 1, true,
      "fedadam, fedyogi, fedadagrad: first moment decay"));
  k.push_back(NumberKey(
      "strategy.beta2", [](auto& c) -> auto& { return c.strategy.beta2; }, 0, false, 1, true,
      "fedadam, fedyogi: second moment decay"));
  k.push_back(NumberKey(
      "strategy.tau", [](auto& c) -> auto& { return c.strategy.tau; }, 0, true, 10, false,
      "adaptive optimizers: adaptivity (the ε of Adam)"));
  k.push_back(NumberKey(
      "strategy.proximal_mu", [](auto& c) -> auto& { return c.strategy.proximal_mu; }, 0, false,
      1000, false,
      "fedprox: weight μ of (μ/2)‖w − w_global‖² in each silo's local "
      "objective"));
  k.push_back(NumberKey(
      "strategy.trim_fraction", [](auto& c) -> auto& { return c.strategy.trim_fraction; }, 0, false,
      0.5, true, "trimmed_mean: share of values cut from each end, per coordinate"));
  k.push_back(IntKey(
                  "strategy.byzantine", [](auto& c) -> auto& { return c.strategy.byzantine; }, -1,
                  1000, "krum, multi_krum: hostile silos assumed (f); needs n > 2f + 2")
                  .Default("the most Krum tolerates: ⌊(n − 3) / 2⌋ for n silos a round")
                  .Allowed("−1 (auto) – 1000"));
  k.push_back(IntKey(
                  "strategy.multi_krum_keep",
                  [](auto& c) -> auto& { return c.strategy.multi_krum_keep; }, 0, 10000,
                  "multi_krum: updates averaged")
                  .Default("`0` (= n − f)"));
  k.push_back(NumberKey(
      "strategy.max_update_norm", [](auto& c) -> auto& { return c.strategy.max_update_norm; }, 0,
      false, 1e9, false,
      "any strategy: L2-clip every update to this norm before aggregating "
      "(under secure aggregation the silos clip); 0 = off"));
}

// Differential privacy and secure aggregation.
void PrivacyKeys(std::vector<Key>& k) {
  k.push_back(EnumKey(
      "privacy.dp.mode", [](auto& c) -> auto& { return c.privacy.dp.mode; },
      std::vector<DpMode>{DpMode::kNone, DpMode::kLocal, DpMode::kCentral}, &DpModeName,
      "`local`: DP-SGD in every silo; `central`: DP-FedAvg at the orchestrator "
      "(see [differential privacy](privacy.md#differential-privacy))"));
  k.push_back(NumberKey(
      "privacy.dp.noise_multiplier", [](auto& c) -> auto& { return c.privacy.dp.noise_multiplier; },
      0, false, 1e6, false,
      "noise standard deviation ÷ `max_grad_norm`; give this **or** "
      "`target_epsilon`"));
  k.push_back(NumberKey(
      "privacy.dp.target_epsilon", [](auto& c) -> auto& { return c.privacy.dp.target_epsilon; }, 0,
      false, 1e6, false,
      "each silo solves for the noise that spends this ε of its data over the "
      "whole job"));
  k.push_back(NumberKey(
      "privacy.dp.max_grad_norm", [](auto& c) -> auto& { return c.privacy.dp.max_grad_norm; }, 0,
      true, 1e6, false, "per-example gradient clipping norm"));
  k.push_back(NumberKey(
      "privacy.dp.delta", [](auto& c) -> auto& { return c.privacy.dp.delta; }, 0, true, 1, true,
      "δ of the (ε, δ) guarantee"));
  k.push_back(NumberKey(
      "privacy.dp.clip_norm", [](auto& c) -> auto& { return c.privacy.dp.clip_norm; }, 0, true, 1e9,
      false,
      "central: L2 bound on each silo's update (initial bound with adaptive "
      "clipping)"));
  k.push_back(BoolKey(
      "privacy.dp.adaptive_clipping",
      [](auto& c) -> auto& { return c.privacy.dp.adaptive_clipping; },
      "central: let the bound follow a quantile of the update norms"));
  k.push_back(NumberKey(
      "privacy.dp.target_quantile", [](auto& c) -> auto& { return c.privacy.dp.target_quantile; },
      0, false, 1, false, "central, adaptive: share of updates the bound should leave unclipped"));
  k.push_back(NumberKey(
      "privacy.dp.clip_learning_rate",
      [](auto& c) -> auto& { return c.privacy.dp.clip_learning_rate; }, 0, true, 10, false,
      "central, adaptive: step of the geometric bound update"));

  Key enabled = BoolKey(
      "privacy.secure_aggregation.enabled",
      [](auto& c) -> auto& { return c.privacy.secure_aggregation.enabled; },
      "the orchestrator sees only the sum of the silos' updates (see "
      "[secure aggregation](secure-aggregation.md)); "
      "`privacy.secure_aggregation: true` is short for `{enabled: true}`, and "
      "a `secure_aggregation` mapping turns it on");
  enabled.shorthand = true;
  enabled.read = ReadSecureAggregationEnabled;
  k.push_back(std::move(enabled));
  k.push_back(IntKey(
                  "privacy.secure_aggregation.threshold",
                  [](auto& c) -> auto& { return c.privacy.secure_aggregation.threshold; }, 0, 255,
                  "silos that must stay to the end of a round; 0 = two thirds of those "
                  "sampled")
                  .Allowed("0, or more than half of the silos sampled – number of silos"));
  k.push_back(NumberKey(
      "privacy.secure_aggregation.clip_range",
      [](auto& c) -> auto& { return c.privacy.secure_aggregation.clip_range; }, 0, true, 1e6, false,
      "update values are clipped to ± this before fixed-point encoding"));
  k.push_back(IntKey(
      "privacy.secure_aggregation.bits",
      [](auto& c) -> auto& { return c.privacy.secure_aggregation.bits; }, 8, 30,
      "fixed-point bits per value"));
  k.push_back(NumberKey(
      "privacy.secure_aggregation.max_weight",
      [](auto& c) -> auto& { return c.privacy.secure_aggregation.max_weight; }, 1, false, 1e7,
      false, "a silo's weight is its examples ÷ this (more examples are refused)"));
}

// Checkpoints and tracking.
void RunKeys(std::vector<Key>& k) {
  k.push_back(IntKey(
      "checkpoint.every", [](auto& c) -> auto& { return c.checkpoint.every; }, 0, 100000,
      "write the global model every N rounds (and after the last); 0 = only the "
      "final model"));

  const auto mlflow = [](const JobConfig& c) { return !c.tracking.mlflow.uri.empty(); };
  k.push_back(StringKey(
                  "tracking.mlflow.uri", [](auto& c) -> auto& { return c.tracking.mlflow.uri; },
                  "send the run to this MLflow tracking server (see "
                  "[export to MLflow](tracking.md#export-to-mlflow))")
                  .Allowed("`http(s)://host:port[/prefix]`"));
  k.push_back(StringKey(
                  "tracking.mlflow.experiment",
                  [](auto& c) -> auto& { return c.tracking.mlflow.experiment; },
                  "MLflow experiment (created when missing)")
                  .Default("the job's `experiment`")
                  .PresentIf([](const JobConfig& c) {
                    return !c.tracking.mlflow.uri.empty() && !c.tracking.mlflow.experiment.empty();
                  }));
  k.push_back(BoolKey(
                  "tracking.mlflow.log_model",
                  [](auto& c) -> auto& { return c.tracking.mlflow.log_model; },
                  "upload the final model and the resolved job as the run's artifacts")
                  .PresentIf(mlflow));
  k.push_back(IntKey(
                  "tracking.mlflow.wait", [](auto& c) -> auto& { return c.tracking.mlflow.wait; },
                  0, 86400,
                  "seconds the end of a run waits for MLflow to take what is still queued")
                  .PresentIf(mlflow));
}

// Vertical jobs' split model.
void VerticalKeys(std::vector<Key>& k) {
  const auto vertical = [](const JobConfig& c) { return c.kind == JobKind::kVertical; };
  k.push_back(StringKey(
                  "vertical.label_owner", [](auto& c) -> auto& { return c.vertical.label_owner; },
                  "`kind: vertical`: the party whose table holds the label; it runs the top "
                  "model, and the labels stay with it (their gradients do not: see [label "
                  "leakage](vertical.md#label-leakage))")
                  .Default("**required** with `kind: vertical`")
                  .Allowed("one of `federation.silos`")
                  .Since(3));
  k.push_back(IntKey(
                  "vertical.cut_width", [](auto& c) -> auto& { return c.vertical.cut_width; }, 1,
                  4096, "outputs of each party's bottom model (the cut layer)")
                  .Default("`8`")
                  .Since(3)
                  .PresentIf(vertical));
  Key top = Base("vertical.top_hidden", "list of integers",
                 "hidden layer widths of the label owner's top model; `[]`: linear");
  top.allowed = "each 1–100000";
  top.fallback = "`[]`";
  top.since = 3;
  top.read = [](const Reader& r, JobConfig& c) {
    return ReadWidths(r, "vertical", "top_hidden", &c.vertical.top_hidden);
  };
  top.present = vertical;
  top.write = [](const JobConfig& c, YAML::Emitter& out) {
    out << YAML::Flow << c.vertical.top_hidden;
  };
  k.push_back(std::move(top));
  k.push_back(NumberKey(
                  "vertical.gradient_noise",
                  [](auto& c) -> auto& { return c.vertical.gradient_noise; }, 0, false, 100, false,
                  "Gaussian noise on the gradients the label owner sends, in units of the "
                  "batch's gradient RMS: blunts label leakage (see [label "
                  "leakage](vertical.md#label-leakage))")
                  .Default("`0`")
                  .Since(3)
                  .PresentIf(vertical));
  k.push_back(StringKey(
                  "vertical.predict_with", [](auto& c) -> auto& { return c.vertical.predict_with; },
                  "a run id: score this job's rows with that run's split model (each party's "
                  "kept part) instead of training; the label owner keeps the predictions (see "
                  "[predicting](vertical.md#predicting))")
                  .Default("`\"\"`: train")
                  .Since(3));
}

std::vector<Key> MakeKeys() {
  std::vector<Key> k;
  DataKeys(k);
  ModelKeys(k);
  TrainingKeys(k);
  StrategyKeys(k);
  PrivacyKeys(k);
  RunKeys(k);
  VerticalKeys(k);
  // Defaults the reference shows: what a job without the key resolves to.
  const JobConfig defaults;
  for (Key& key : k) {
    if (!key.fallback.empty()) continue;
    if (key.present && !key.present(defaults)) {
      key.fallback = "none";
      continue;
    }
    YAML::Emitter out;
    key.write(defaults, out);
    key.fallback = absl::StrCat("`", out.c_str(), "`");
  }
  return k;
}

const std::vector<Key>& Keys() {
  static const std::vector<Key>* keys = new std::vector<Key>(MakeKeys());
  return *keys;
}

// The sections from the document down to the one holding `path`: "", "a",
// "a.b" for "a.b.c".
std::vector<std::string> SectionsAbove(const std::string& path) {
  std::vector<std::string> out = {""};
  for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1)) {
    out.push_back(path.substr(0, dot));
  }
  return out;
}

// The names one level below `section`, in table order.
std::vector<std::string> Children(const std::vector<const Key*>& keys, const std::string& section) {
  std::vector<std::string> out;
  const std::string prefix = section.empty() ? "" : section + ".";
  for (const Key* k : keys) {
    if (!absl::StartsWith(k->path, prefix)) continue;
    const std::string rest = k->path.substr(prefix.size());
    const std::string child = rest.substr(0, rest.find('.'));
    if (std::find(out.begin(), out.end(), child) == out.end()) out.push_back(child);
  }
  return out;
}

std::vector<const Key*> KeysOf(int schema) {
  std::vector<const Key*> out;
  for (const Key& k : Keys()) {
    if (k.since <= schema) out.push_back(&k);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Rules that tie keys together, and defaults that follow other keys.

Status ResolveModel(const Reader& r, const std::set<std::string>& overridden, JobConfig& c) {
  if (!c.model.torchscript.empty()) {
    // `--set model.torchscript=...` replaces a job's built-in model.
    if (r.Given("model.name") && c.model.kind != ModelKind::kTorchScript &&
        overridden.count("model.torchscript") == 0) {
      return r.Error("model.name", "model.name",
                     absl::StrCat("is '", ModelKindName(c.model.kind),
                                  "', but model.torchscript names a model file; drop one"));
    }
    c.model.kind = ModelKind::kTorchScript;
  } else if (c.model.kind == ModelKind::kTorchScript) {
    return r.Error("model.name", "model.torchscript",
                   "is required with model.name torchscript: the module file (.pt)");
  }
  return absl::OkStatus();
}

Status ResolveStrategy(const Reader& r, JobConfig& c) {
  StrategyConfig& st = c.strategy;
  if (c.federation.min_silos > static_cast<int>(c.federation.silos.size())) {
    return r.Error("federation.min_silos", "federation.min_silos",
                   absl::StrCat("is ", c.federation.min_silos, " but the federation has only ",
                                c.federation.silos.size(), " silos"));
  }
  // Each strategy's default step; an explicit server_learning_rate wins.
  const StrategyTraits& traits = TraitsOf(st);
  if (!r.Given("strategy.server_learning_rate")) {
    st.server_learning_rate = traits.default_server_learning_rate >= 0
                                  ? traits.default_server_learning_rate
                                  : std::round((1 - st.server_momentum) * 1e12) / 1e12;  // fedavgm
  }
  const int num_silos = SilosPerRound(c.federation);
  if (st.byzantine < 0) st.byzantine = std::max(0, (num_silos - 3) / 2);
  if (traits.byzantine_bound && num_silos <= 2 * st.byzantine + 2) {
    return r.Error("strategy.byzantine", "strategy.byzantine",
                   absl::StrCat(st.name,
                                " needs more than 2 x byzantine + 2 silos a round; the "
                                "job has ",
                                num_silos, " and byzantine is ", st.byzantine));
  }
  if (st.name == "multi_krum" && st.multi_krum_keep > num_silos - st.byzantine) {
    return r.Error("strategy.multi_krum_keep", "strategy.multi_krum_keep",
                   absl::StrCat("is ", st.multi_krum_keep, ", more than silos - byzantine (",
                                num_silos - st.byzantine, ")"));
  }
  return absl::OkStatus();
}

Status CheckDp(const Reader& r, const JobConfig& c) {
  const DpConfig& d = c.privacy.dp;
  if (d.mode == DpMode::kCentral && (d.noise_multiplier <= 0 || d.target_epsilon > 0)) {
    return r.Error("privacy.dp.mode", "privacy.dp",
                   "mode central needs noise_multiplier (> 0); target_epsilon is for local");
  }
  if (d.mode == DpMode::kCentral && !TraitsOf(c.strategy).mean_of_updates) {
    // The noise is calibrated for the mean of clipped updates; added to a
    // server optimizer's step or to a robust rule's output it would promise a
    // guarantee it does not give.
    return r.Error("privacy.dp.mode", "privacy.dp.mode",
                   absl::StrCat("central adds its noise to the mean of the clipped updates, "
                                "which strategy '",
                                c.strategy.name,
                                "' does not apply; use strategy fedavg or fedprox, or mode local"));
  }
  if (d.mode == DpMode::kLocal && (d.noise_multiplier > 0) == (d.target_epsilon > 0)) {
    return r.Error("privacy.dp.mode", "privacy.dp",
                   "mode local needs exactly one of noise_multiplier and target_epsilon "
                   "(> 0)");
  }
  if (d.mode == DpMode::kLocal && c.model.kind == ModelKind::kTorchScript) {
    return r.Error("privacy.dp.mode", "privacy.dp.mode",
                   "local (DP-SGD) does not support model.torchscript: per-example gradients "
                   "come from the built-in models' known layers; use a built-in model.name, or "
                   "mode central");
  }
  if (d.mode == DpMode::kNone && (d.noise_multiplier > 0 || d.target_epsilon > 0)) {
    return r.Error("privacy.dp.mode", "privacy.dp.mode",
                   "is none, but noise_multiplier or target_epsilon is set; say mode: local");
  }
  return absl::OkStatus();
}

Status CheckSecureAggregation(const Reader& r, const JobConfig& c) {
  const SecureAggregationConfig& sa = c.privacy.secure_aggregation;
  const std::string at = "privacy.secure_aggregation";
  const std::string threshold = "privacy.secure_aggregation.threshold";
  if (sa.threshold == 1) {
    return r.Error(threshold, threshold,
                   "must be 0 (automatic) or at least 2: the sum of one silo is its update");
  }
  if (!sa.enabled) return absl::OkStatus();
  if (sa.threshold > static_cast<int>(c.federation.silos.size())) {
    return r.Error(at, threshold,
                   absl::StrCat("is ", sa.threshold, ", more than the job's ",
                                c.federation.silos.size(), " silos"));
  }
  if (sa.threshold > 0 && sa.threshold < c.federation.min_silos) {
    return r.Error(
        at, threshold,
        absl::StrCat("is ", sa.threshold, ", below federation.min_silos (", c.federation.min_silos,
                     "): a sum could be over fewer silos, and silos refuse it"));
  }
  const int sampled = SilosPerRound(c.federation);
  if (sa.threshold > 0 && 2 * sa.threshold <= sampled) {
    return r.Error(at, threshold,
                   absl::StrCat("is ", sa.threshold, ", not more than half of the ", sampled,
                                " silos sampled each round; silos refuse it (the orchestrator "
                                "could then show them two lists of survivors). Use at least ",
                                sampled / 2 + 1, ", or 0 (two thirds)"));
  }
  if (TraitsOf(c.strategy).needs_all_updates) {
    return r.Error(at, at,
                   absl::StrCat("strategy '", c.strategy.name,
                                "' needs every silo's update, and secure aggregation reveals "
                                "only their sum; use fedavg, fedavgm, fedprox or an adaptive "
                                "optimizer"));
  }
  if (c.federation.silos.size() < 2) {
    return r.Error(at, at, "needs at least 2 silos: the sum of one silo is its update");
  }
  return absl::OkStatus();
}

Status CheckScaffold(const Reader& r, const JobConfig& c) {
  if (!TraitsOf(c.strategy).control_variates) return absl::OkStatus();
  if (c.training.optimizer != OptimizerKind::kSgd) {
    return r.Error("strategy.name", "strategy.name",
                   "scaffold needs training.optimizer sgd: its control variates assume SGD steps");
  }
  if (c.privacy.dp.mode != DpMode::kNone || c.privacy.secure_aggregation.enabled) {
    return r.Error("strategy.name", "strategy.name",
                   "scaffold is not supported with privacy.dp or secure_aggregation: its "
                   "control variates are sent unprotected");
  }
  return absl::OkStatus();
}

// A learning rate that decays to nothing trains nothing, and SCAFFOLD's
// control variates divide by it.
Status CheckLrDecay(const Reader& r, const JobConfig& c) {
  const TrainingConfig& t = c.training;
  const double last = std::pow(t.lr_decay, t.rounds - 1);
  if (last >= 1e-6) return absl::OkStatus();
  return r.Error("training.lr_decay", "training.lr_decay",
                 absl::StrCat("is ", Num(t.lr_decay), ": over ", t.rounds,
                              " rounds it takes the learning rate below a millionth of "
                              "learning_rate; use at least ",
                              Num(std::ceil(std::pow(1e-6, 1.0 / (t.rounds - 1)) * 1e4) / 1e4)));
}

Status CheckTracking(const Reader& r, const JobConfig& c) {
  const MlflowConfig& ml = c.tracking.mlflow;
  if (!ml.uri.empty() && !absl::StartsWith(ml.uri, "http://") &&
      !absl::StartsWith(ml.uri, "https://")) {
    return r.Error("tracking.mlflow.uri", "tracking.mlflow.uri",
                   absl::StrCat("'", ml.uri,
                                "' is not an MLflow tracking server's address "
                                "(http://host:port or https://host:port)"));
  }
  if (ml.uri.empty() && (r.Given("tracking.mlflow.experiment") ||
                         r.Given("tracking.mlflow.log_model") || r.Given("tracking.mlflow.wait"))) {
    return r.Error("tracking.mlflow", "tracking.mlflow.uri",
                   "is required when tracking.mlflow is set");
  }
  return absl::OkStatus();
}

// A vertical job (docs/vertical.md) trains one split model over the parties'
// own tables: nothing is averaged, so the keys of aggregation do not apply.
Status CheckVertical(const Reader& r, const JobConfig& c) {
  if (c.kind != JobKind::kVertical) {
    if (!r.Given("vertical")) return absl::OkStatus();
    return r.Error("vertical", "vertical",
                   "is for vertical jobs, and this one is horizontal: add `kind: vertical`");
  }
  const std::vector<std::string>& parties = c.federation.silos;
  const std::string& owner = c.vertical.label_owner;
  if (owner.empty()) {
    return r.Error("kind", "vertical.label_owner",
                   "is required with kind vertical: the party whose table holds the label");
  }
  if (std::find(parties.begin(), parties.end(), owner) == parties.end()) {
    return r.Error("vertical.label_owner", "vertical.label_owner",
                   absl::StrCat("'", owner, "' is not a party of the job (federation.silos: ",
                                absl::StrJoin(parties, ", "), ")"));
  }
  if (IsBuiltinDataset(c.data.dataset)) {
    return r.Error("data.dataset", "data.dataset",
                   absl::StrCat("'", c.data.dataset,
                                "' is a built-in data set; a vertical job reads each party's own "
                                "table: name a dataset of the parties' catalogs that has an `id` "
                                "column"));
  }
  if (c.model.kind != ModelKind::kMlp && c.model.kind != ModelKind::kLogistic &&
      c.model.kind != ModelKind::kTorchScript) {
    return r.Error("model.name", "model.name",
                   absl::StrCat("is '", ModelKindName(c.model.kind),
                                "'; a vertical job's bottom models are mlp (model.hidden, then "
                                "the cut layer), logistic (the cut layer alone), or the "
                                "submodules of a TorchScript module named after the parties "
                                "(model.torchscript)"));
  }
  // (Tested by value: a resolved job, written back, has every key.)
  if (c.strategy.name != "fedavg" || c.strategy.max_update_norm > 0) {
    return r.Error("strategy", "strategy",
                   "does not apply to a vertical job: it trains one split model, and nothing is "
                   "aggregated; drop the section");
  }
  if (c.privacy.dp.mode != DpMode::kNone || c.privacy.secure_aggregation.enabled) {
    return r.Error("privacy", "privacy",
                   "differential privacy and secure aggregation protect averaged updates, which "
                   "a vertical job does not have; to blunt label leakage through the gradients "
                   "use vertical.gradient_noise");
  }
  if (c.federation.fraction < 1) {
    return r.Error("federation.fraction", "federation.fraction",
                   "must be 1 for a vertical job: every party computes every step");
  }
  if (!c.preprocess.statistics.empty()) {
    return r.Error("preprocess.statistics", "preprocess.statistics",
                   "does not apply to a vertical job: each party scales its own columns with "
                   "its own training rows' statistics");
  }
  const std::string& with = c.vertical.predict_with;
  if (!with.empty() && !IsValidRunId(with)) {
    return r.Error("vertical.predict_with", "vertical.predict_with",
                   "is not a run id (letters, digits, '-', '_' and '.')");
  }
  return absl::OkStatus();
}

// Every rule that ties keys together, once every key is read.
Status ResolveAndCheck(const Reader& r, const std::set<std::string>& overridden, JobConfig& c) {
  FEDSILO_RETURN_IF_ERROR(ResolveModel(r, overridden, c));
  FEDSILO_RETURN_IF_ERROR(ResolveStrategy(r, c));
  FEDSILO_RETURN_IF_ERROR(CheckDp(r, c));
  FEDSILO_RETURN_IF_ERROR(CheckSecureAggregation(r, c));
  FEDSILO_RETURN_IF_ERROR(CheckScaffold(r, c));
  FEDSILO_RETURN_IF_ERROR(CheckLrDecay(r, c));
  FEDSILO_RETURN_IF_ERROR(CheckTracking(r, c));
  FEDSILO_RETURN_IF_ERROR(CheckVertical(r, c));
  // A vertical job that predicts scores its rows in one round, training none.
  if (c.kind == JobKind::kVertical && !c.vertical.predict_with.empty()) c.training.rounds = 1;
  if (c.data.partition == PartitionScheme::kShards && c.federation.silos.size() > 1000) {
    return r.Error("", "data.partition", "shards needs at most 1000 silos");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Reading and writing a whole job.

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

StatusOr<JobConfig> Parse(absl::string_view yaml_text, const std::string& source,
                          const std::vector<ConfigOverride>& overrides, int schema) {
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
  const Reader r(root, source, overridden);
  const std::vector<const Key*> keys = KeysOf(schema);
  std::set<std::string> checked;
  JobConfig c;
  for (const Key* key : keys) {
    // A section's keys are checked before its first key is read.
    for (const std::string& section : SectionsAbove(key->path)) {
      if (!checked.insert(section).second) continue;
      const YAML::Node& node = r.At(section).node();
      const bool shorthand =
          node && node.IsScalar() && std::any_of(keys.begin(), keys.end(), [&](const Key* k) {
            return k->shorthand && SectionOf(k->path) == section;
          });
      if (!shorthand) FEDSILO_RETURN_IF_ERROR(r.At(section).CheckKeys(Children(keys, section)));
    }
    FEDSILO_RETURN_IF_ERROR(key->read(r, c));
  }
  FEDSILO_RETURN_IF_ERROR(ResolveAndCheck(r, overridden, c));
  return c;
}

// Writes the keys of `keys` that the job holds, opening and closing
// sections as the paths go.
std::string Write(const JobConfig& c, const std::vector<const Key*>& keys) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::vector<std::string> open;  // sections open, outermost first
  for (const Key* key : keys) {
    if (key->present && !key->present(c)) continue;
    std::vector<std::string> sections = absl::StrSplit(key->path, '.');
    const std::string leaf = sections.back();
    sections.pop_back();
    size_t same = 0;
    while (same < open.size() && same < sections.size() && open[same] == sections[same]) ++same;
    for (size_t i = open.size(); i > same; --i) out << YAML::EndMap;
    open.resize(same);
    for (size_t i = same; i < sections.size(); ++i) {
      out << YAML::Key << sections[i] << YAML::Value << YAML::BeginMap;
      open.push_back(sections[i]);
    }
    out << YAML::Key << leaf << YAML::Value;
    key->write(c, out);
  }
  for (size_t i = 0; i < open.size(); ++i) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string WrittenValue(const Key& key, const JobConfig& c) {
  if (key.present && !key.present(c)) return "";
  YAML::Emitter out;
  key.write(c, out);
  return out.c_str();
}

std::string Escape(absl::string_view cell) { return absl::StrReplaceAll(cell, {{"|", "\\|"}}); }

}  // namespace

absl::string_view FirstReleaseReading(int schema) {
  switch (schema) {
    case 1:
      return "0.1.0";
    case 2:
      return "0.2.0";
    case 3:
      return "0.3.0";
  }
  return "";
}

StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml_text, absl::string_view source,
                                   const std::vector<ConfigOverride>& overrides) {
  return GuardYaml<JobConfig>(
      source, [&] { return Parse(yaml_text, std::string(source), overrides, kJobSchemaVersion); });
}

StatusOr<JobConfig> ParseJobConfigOfSchema(absl::string_view yaml_text, absl::string_view source,
                                           int schema) {
  return GuardYaml<JobConfig>(source,
                              [&] { return Parse(yaml_text, std::string(source), {}, schema); });
}

std::string JobConfigToYaml(const JobConfig& config) {
  return Write(config, KeysOf(kJobSchemaVersion));
}

std::pair<int, std::string> OldestSchemaFor(const JobConfig& config) {
  static const JobConfig defaults;
  std::pair<int, std::string> oldest = {kOldestJobSchemaVersion, ""};
  for (const Key& key : Keys()) {
    if (key.since <= oldest.first) continue;
    if (WrittenValue(key, config) != WrittenValue(key, defaults)) oldest = {key.since, key.path};
  }
  return oldest;
}

StatusOr<std::string> JobConfigToYamlForSchema(const JobConfig& config, int schema) {
  if (schema < kOldestJobSchemaVersion || schema > kJobSchemaVersion) {
    return absl::InvalidArgumentError(absl::StrCat("job schema ", schema,
                                                   " cannot be written by this release (it "
                                                   "writes ",
                                                   kOldestJobSchemaVersion, " to ",
                                                   kJobSchemaVersion, ")"));
  }
  const auto [needed, key] = OldestSchemaFor(config);
  if (needed > schema) {
    return absl::FailedPreconditionError(absl::StrCat("the job sets ", key,
                                                      ", which needs job schema ", needed,
                                                      " (this reader has ", schema, ")"));
  }
  return Write(config, KeysOf(schema));
}

std::string JobConfigToStableYaml(const JobConfig& config) {
  return Write(config, KeysOf(OldestSchemaFor(config).first));
}

std::vector<JobKeyInfo> JobKeys() {
  std::vector<JobKeyInfo> out;
  for (const Key& k : Keys()) out.push_back(k);
  return out;
}

std::string JobReferenceMarkdown() {
  std::string md = absl::StrCat(
      "# Job file reference\n\n"
      "<!-- Generated by `fedsilo validate --reference` from src/core/job_schema.cc; a test fails "
      "when this file is stale. -->\n\n"
      "A job is a YAML mapping. Unknown keys are errors (with the nearest valid key suggested); "
      "wrong types and out-of-range values name the key and the allowed range. "
      "`fedsilo validate JOB --print` shows the job with every default filled in (but "
      "`tracking.mlflow.experiment`, which follows `experiment` unless given, and a `preprocess` "
      "section the job does not have: no preprocessing).\n\n"
      "The *schema* column is the job-schema version that brought the key. This release reads "
      "and writes job schema ",
      kJobSchemaVersion,
      "; a silo of an older release that reads only an older schema can still run a job that "
      "leaves the newer keys at their defaults (see [operating a federation](operations.md"
      "#upgrading-one-party-at-a-time)).\n\n"
      "| key | type | default | allowed | schema | meaning |\n"
      "|---|---|---|---|---|---|\n");
  for (const Key& k : Keys()) {
    absl::StrAppend(&md, "| `", k.path, "` | ", k.type, " | ", Escape(k.fallback), " | ",
                    Escape(k.allowed), " | ", k.since, " | ", Escape(k.help), " |\n");
  }
  absl::StrAppend(&md,
                  "\nExample (`examples/digits.yaml`):\n\n"
                  "```yaml\n"
                  "name: digits\n"
                  "seed: 42\n"
                  "data: {dataset: digits, partition: dirichlet, alpha: 0.5}\n"
                  "model: {name: mlp, hidden: [64]}\n"
                  "training: {rounds: 20, local_epochs: 2, batch_size: 16, learning_rate: 0.05, "
                  "momentum: 0.9}\n"
                  "federation: {silos: 5}\n"
                  "```\n");
  return md;
}

}  // namespace fedsilo
