// Dataset: labelled examples held in memory as float features; DataView: a
// subset of one by index, which is how a silo sees its partition without
// copying. Both are values, safe to share read-only between threads.
#ifndef FEDSILO_ML_DATASET_H_
#define FEDSILO_ML_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ml/byte_store.h"

namespace fedsilo::ml {

struct Dataset {
  std::string name;
  std::vector<int64_t> example_shape;  // {30} for tabular rows, {1, 28, 28} for images
  int num_classes = 0;
  // Features, size() * feature_size() values, row-major, in one of two forms:
  // floats, or bytes (images) at `byte_features->data() + byte_offset` whose
  // value is byte * byte_scale. Bytes take a quarter of the memory (and can be
  // the mapped file itself); they are turned into floats batch by batch.
  std::vector<float> features;
  std::shared_ptr<const ByteStore> byte_features;
  size_t byte_offset = 0;
  float byte_scale = 1.0f / 255.0f;
  std::vector<int64_t> labels;  // in [0, num_classes)

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t feature_size() const;
  bool has_byte_features() const { return byte_features != nullptr; }
  // Example i's bytes. REQUIRES: has_byte_features().
  const uint8_t* byte_example(int64_t i) const {
    return byte_features->data() + byte_offset + i * feature_size();
  }
  // Writes example i's feature_size() values to `out`.
  void CopyExample(int64_t i, float* out) const;
  // Example i's features. REQUIRES: !has_byte_features().
  const float* example(int64_t i) const { return features.data() + i * feature_size(); }
};

struct DataView {
  std::shared_ptr<const Dataset> dataset;
  std::vector<int64_t> indices;

  // The whole data set.
  static DataView All(std::shared_ptr<const Dataset> dataset);

  int64_t size() const { return static_cast<int64_t>(indices.size()); }
  // Number of examples per class, num_classes entries.
  std::vector<int64_t> LabelCounts() const;
};

// The classes `labels` hold: 1 + the largest, and at least two.
int NumClassesOf(const std::vector<int64_t>& labels);

// A training set and a held-out test set of the same shape and classes.
struct DatasetSplits {
  std::shared_ptr<const Dataset> train;
  std::shared_ptr<const Dataset> test;
};

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_DATASET_H_
