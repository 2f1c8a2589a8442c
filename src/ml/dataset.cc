#include "ml/dataset.h"

#include <algorithm>
#include <numeric>

namespace fedsilo::ml {

int64_t Dataset::feature_size() const {
  int64_t n = 1;
  for (int64_t d : example_shape) n *= d;
  return n;
}

void Dataset::CopyExample(int64_t i, float* out) const {
  const int64_t f = feature_size();
  if (has_byte_features()) {
    const uint8_t* in = byte_example(i);
    for (int64_t j = 0; j < f; ++j) out[j] = static_cast<float>(in[j]) * byte_scale;
  } else {
    std::copy_n(example(i), f, out);
  }
}

int NumClassesOf(const std::vector<int64_t>& labels) {
  int64_t max_label = 1;
  for (int64_t l : labels) max_label = std::max(max_label, l);
  return static_cast<int>(max_label + 1);
}

DataView DataView::All(std::shared_ptr<const Dataset> dataset) {
  DataView view;
  view.indices.resize(static_cast<size_t>(dataset->size()));
  std::iota(view.indices.begin(), view.indices.end(), 0);
  view.dataset = std::move(dataset);
  return view;
}

std::vector<int64_t> DataView::LabelCounts() const {
  std::vector<int64_t> counts(static_cast<size_t>(dataset->num_classes), 0);
  for (int64_t i : indices) ++counts[static_cast<size_t>(dataset->labels[static_cast<size_t>(i)])];
  return counts;
}

}  // namespace fedsilo::ml
