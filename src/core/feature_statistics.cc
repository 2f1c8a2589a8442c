#include "core/feature_statistics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fedsilo {
namespace {

constexpr absl::string_view kClassPrefix = "class_counts:";
constexpr absl::string_view kFeaturePrefix = "feature:";
constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor Doubles(std::string name, const std::vector<double>& values) {
  Tensor t(std::move(name), DType::kFloat64, {static_cast<int64_t>(values.size())});
  std::copy(values.begin(), values.end(), reinterpret_cast<double*>(t.data()));
  return t;
}

}  // namespace

FeatureSums FeatureSums::For(std::string label, std::vector<std::string> features,
                             int num_classes) {
  FeatureSums s;
  s.label = std::move(label);
  s.class_counts.assign(static_cast<size_t>(num_classes), 0);
  const size_t n = features.size();
  s.features = std::move(features);
  s.count.assign(n, 0);
  s.sum.assign(n, 0);
  s.sum_squares.assign(n, 0);
  s.min.assign(n, kInf);
  s.max.assign(n, -kInf);
  return s;
}

void FeatureSums::AddRow(const double* values, int64_t label_value) {
  ++class_counts[static_cast<size_t>(label_value)];
  for (size_t i = 0; i < features.size(); ++i) AddValue(i, values[i]);
}

void FeatureSums::AddValue(size_t i, double value) {
  if (std::isnan(value)) return;
  ++count[i];
  sum[i] += value;
  sum_squares[i] += value * value;
  min[i] = std::min(min[i], value);
  max[i] = std::max(max[i], value);
}

int64_t FeatureSums::rows() const {
  int64_t n = 0;
  for (int64_t c : class_counts) n += c;
  return n;
}

ModelState FeatureSums::ToState() const {
  ModelState state;
  std::vector<double> classes(class_counts.begin(), class_counts.end());
  (void)state.Add(Doubles(absl::StrCat(kClassPrefix, label), classes));
  for (size_t i = 0; i < features.size(); ++i) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    (void)state.Add(Doubles(absl::StrCat(kFeaturePrefix, features[i]),
                            {static_cast<double>(count[i]), sum[i], sum_squares[i],
                             min_max_withheld ? nan : min[i], min_max_withheld ? nan : max[i]}));
  }
  if (!shape.empty()) (void)state.Add(Doubles("shape", {shape.begin(), shape.end()}));
  return state;
}

StatusOr<FeatureSums> FeatureSums::FromState(const ModelState& state, absl::string_view source) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not feature statistics: ", why));
  };
  if (state.empty()) return bad("empty");
  FeatureSums s;
  for (size_t k = 0; k < state.size(); ++k) {
    const Tensor& t = state.tensors()[k];
    if (t.dtype() != DType::kFloat64 || t.shape().size() != 1) {
      return bad(absl::StrCat("tensor '", t.name(), "' is not a float64 vector"));
    }
    const double* v = reinterpret_cast<const double*>(t.data());
    const auto integral = [](double x) { return x >= 0 && x == std::floor(x) && x < 1e15; };
    if (k == 0) {
      if (!absl::StartsWith(t.name(), kClassPrefix)) return bad("no class counts first");
      s.label = t.name().substr(kClassPrefix.size());
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        if (!integral(v[i])) return bad("a class count is not a count");
        s.class_counts.push_back(static_cast<int64_t>(v[i]));
      }
      continue;
    }
    if (t.name() == "shape" && k + 1 == state.size()) {
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        if (!integral(v[i]) || v[i] < 1 || v[i] > 100000) return bad("an invalid shape");
        s.shape.push_back(static_cast<int64_t>(v[i]));
      }
      continue;
    }
    if (!absl::StartsWith(t.name(), kFeaturePrefix) || t.num_elements() != 5) {
      return bad(absl::StrCat("tensor '", t.name(), "' is not a feature's five sums"));
    }
    // Minima and maxima are both NaN (withheld) or both known.
    const bool withheld = std::isnan(v[3]) && std::isnan(v[4]);
    if (s.features.empty()) s.min_max_withheld = withheld;
    if (withheld != s.min_max_withheld) return bad("minima and maxima withheld for some features");
    if (!integral(v[0]) || std::isnan(v[1]) || std::isnan(v[2]) || v[2] < 0 ||
        (v[0] > 0 &&
         (!std::isfinite(v[1]) || (!withheld && (!std::isfinite(v[3]) || !std::isfinite(v[4])))))) {
      return bad(
          absl::StrCat("feature '", t.name().substr(kFeaturePrefix.size()), "' has invalid sums"));
    }
    s.features.push_back(t.name().substr(kFeaturePrefix.size()));
    s.count.push_back(static_cast<int64_t>(v[0]));
    s.sum.push_back(v[1]);
    s.sum_squares.push_back(v[2]);
    s.min.push_back(v[3]);
    s.max.push_back(v[4]);
  }
  if (s.class_counts.size() < 2) return bad("fewer than two classes");
  return s;
}

Status FeatureSums::Add(const FeatureSums& other) {
  if (other.label != label) {
    return absl::InvalidArgumentError(
        absl::StrCat("label column '", other.label, "' is not the others' '", label, "'"));
  }
  if (other.features != features) {
    const auto first_difference = std::mismatch(features.begin(), features.end(),
                                                other.features.begin(), other.features.end());
    const size_t i = static_cast<size_t>(first_difference.first - features.begin());
    const auto at = [&](const std::vector<std::string>& f) {
      return i < f.size() ? absl::StrCat("'", f[i], "'") : std::string("nothing");
    };
    return absl::InvalidArgumentError(absl::StrCat(
        "features differ from the others': feature ", i + 1, " is ", at(other.features),
        ", theirs is ", at(features), " (", other.features.size(), " features against ",
        features.size(), "); the silos' catalogs must list the same features in the same order"));
  }
  if (other.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("examples of shape ", ShapeToString(other.shape),
                                                   " are not the others' ", ShapeToString(shape)));
  }
  if (other.class_counts.size() > class_counts.size()) {
    class_counts.resize(other.class_counts.size(), 0);
  }
  for (size_t c = 0; c < other.class_counts.size(); ++c) class_counts[c] += other.class_counts[c];
  min_max_withheld = min_max_withheld || other.min_max_withheld;
  for (size_t i = 0; i < features.size(); ++i) {
    count[i] += other.count[i];
    sum[i] += other.sum[i];
    sum_squares[i] += other.sum_squares[i];
    min[i] = std::min(min[i], other.min[i]);
    max[i] = std::max(max[i], other.max[i]);
  }
  return absl::OkStatus();
}

FeatureStatistics FeatureSums::Finish() const {
  FeatureStatistics st;
  st.label = label;
  st.rows = rows();
  st.class_counts = class_counts;
  st.features = features;
  st.count = count;
  st.shape = shape;
  for (size_t i = 0; i < features.size(); ++i) {
    const double n = static_cast<double>(count[i]);
    const double mean = n > 0 ? sum[i] / n : 0.0;
    const double var = n > 0 ? std::max(0.0, sum_squares[i] / n - mean * mean) : 0.0;
    st.mean.push_back(mean);
    st.std.push_back(std::sqrt(var));
    if (!min_max_withheld) {
      st.min.push_back(n > 0 ? min[i] : 0.0);
      st.max.push_back(n > 0 ? max[i] : 0.0);
    }
  }
  return st;
}

}  // namespace fedsilo
