// FeatureSums: what one silo tells the federation about its tabular training
// rows so that scaling can use global statistics without any row leaving it:
// per feature the number of present values, their sum, sum of squares,
// minimum and maximum, and the rows per class. The orchestrator adds the
// silos' sums (Add) and turns the total into FeatureStatistics (Finish).
//
// Sums travel as a ModelState (the transport's reply payload): a float64
// tensor "class_counts:<label column>" and one float64 [5] tensor
// "feature:<name>" per feature, in order; image data adds a float64 tensor
// "shape" last.
//
// A value type; not thread-safe.
#ifndef FEDSILO_CORE_FEATURE_STATISTICS_H_
#define FEDSILO_CORE_FEATURE_STATISTICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo {

struct FeatureSums {
  std::string label;
  std::vector<int64_t> class_counts;
  std::vector<std::string> features;
  std::vector<int64_t> count;
  std::vector<double> sum, sum_squares, min, max;  // min/max: +inf/-inf with no value
  // The silo keeps its minima and maxima (travelling as NaN): the total has
  // none once any silo withheld them.
  bool min_max_withheld = false;
  std::vector<int64_t> shape;  // image data: one example's shape (a "shape" tensor)

  // Empty sums for `features`, `num_classes` classes.
  static FeatureSums For(std::string label, std::vector<std::string> features, int num_classes);
  // Adds row values (NaN = missing) and its class. REQUIRES: values.size() == features.size().
  void AddRow(const double* values, int64_t label_value);
  // Adds one value of feature `i` (NaN = missing: not counted).
  void AddValue(size_t i, double value);

  int64_t rows() const;
  void WithholdMinMax() { min_max_withheld = true; }
  ModelState ToState() const;
  // InvalidArgument naming `source` when the state is not sums.
  static StatusOr<FeatureSums> FromState(const ModelState& state, absl::string_view source);
  // Adds another silo's sums. InvalidArgument naming the first difference
  // when the label column, classes or features (names and order) differ.
  Status Add(const FeatureSums& other);
  // Means and (population) standard deviations of the total, and its minima
  // and maxima unless withheld.
  FeatureStatistics Finish() const;
};

}  // namespace fedsilo

#endif  // FEDSILO_CORE_FEATURE_STATISTICS_H_
