// Readers for the file formats fedsilo's data sets come in: IDX (MNIST's
// format, optionally gzipped) and CSV with a label column. Every error names
// the file and, where it helps, the line.
#ifndef FEDSILO_ML_DATASET_READER_H_
#define FEDSILO_ML_DATASET_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "ml/byte_store.h"
#include "ml/dataset.h"

namespace fedsilo::ml {

// An IDX file of unsigned bytes: dims from the header, then the values.
struct IdxArray {
  std::vector<int64_t> dims;
  std::shared_ptr<const ByteStore> file;  // the whole file
  size_t offset = 0;                      // where the values start in it

  size_t size() const { return file->size() - offset; }
  const uint8_t* values() const { return file->data() + offset; }
};

// Reads an IDX file with unsigned-byte data (type 0x08), gzipped when the name
// ends in ".gz". InvalidArgument for a bad header, DataLoss when the file is
// shorter than its header says.
StatusOr<IdxArray> ReadIdx(const std::string& path);

// Images from an IDX image file and labels from an IDX label file; pixels are
// kept as bytes and scaled to [0, 1] when batches are made. Shapes must agree.
StatusOr<Dataset> ReadIdxDataset(const std::string& images_path, const std::string& labels_path,
                                 int num_classes);

enum class CsvHeader {
  kNone,     // every line is data
  kNames,    // the first line holds column names
  kSklearn,  // scikit-learn's bundled sets: "n_samples,n_features,class names..."
};

struct CsvOptions {
  CsvHeader header = CsvHeader::kNone;
  int label_column = -1;               // index of the label column; -1 = last
  int num_classes = 0;                 // 0 = 1 + largest label
  std::vector<int64_t> example_shape;  // empty = {number of feature columns}
};

// A cell holding a class label: an integer in [0, 1e6] (written "3" or "3.0").
bool ParseClassLabel(absl::string_view cell, int64_t* label);

// Reads a CSV file (gzipped when the name ends in ".gz") of numbers; labels must
// be non-negative integers. Errors name the file and line.
StatusOr<Dataset> ReadCsvDataset(const std::string& path, const CsvOptions& options);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_DATASET_READER_H_
