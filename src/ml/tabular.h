// Tabular data a silo brings itself: a CSV file with a header, described by
// the silo's catalog entry (TabularSchema), read into a table of raw values
// (categorical columns one-hot encoded with the job's vocabularies, missing
// values kept as NaN), split, summed for the federated statistics, and turned
// into a Dataset with the job's preprocessing. `fedsilo predict` reads new
// data the same way. Every error names the file, and the line and column
// where there is one.
#ifndef FEDSILO_ML_TABULAR_H_
#define FEDSILO_ML_TABULAR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/feature_statistics.h"
#include "core/job_config.h"
#include "core/status.h"
#include "ml/dataset.h"
#include "ml/model.h"

namespace fedsilo::ml {

enum class MissingValues {
  kError,   // a missing value is an error naming the line and column
  kDrop,    // rows with a missing value are left out
  kImpute,  // the federation's mean of the feature (preprocess.statistics);
            // a missing category: none of its one-hot columns set
};
absl::string_view MissingValuesName(MissingValues missing);

// How a CSV file's columns are used. Cells that are empty, "NA", "NaN",
// "null" or "?" (any case) are missing.
struct TabularSchema {
  std::string label;                     // required: integer classes 0, 1, ...
  std::vector<std::string> features;     // empty: every other column, in file order
  std::vector<std::string> categorical;  // one-hot with preprocess.categories
  MissingValues missing = MissingValues::kError;
  // Vertical jobs: the column that names each row's person (any text; never
  // a feature, and never sent: only its blinded hash leaves the silo).
  std::string id;
};

struct TabularData {
  std::string label;
  std::vector<std::string> features;  // "column" or "column=value" (one-hot)
  std::vector<double> values;         // rows() x features.size(), NaN = missing
  std::vector<int64_t> labels;        // empty when read without the label
  std::vector<std::string> ids;       // the id column's values (TabularSchema::id), or empty

  int64_t rows() const { return static_cast<int64_t>(values.size() / features.size()); }
  const double* row(int64_t i) const {
    return values.data() + static_cast<size_t>(i) * features.size();
  }
  // Rows `indices`, in that order.
  TabularData Subset(const std::vector<int64_t>& indices) const;
};

// Reads `path` (gzipped when the name ends in ".gz"). `categories` are the
// job's vocabularies; a categorical column needs one, and a value outside it
// is an error. With `need_label` false a file without the label column is
// read with no labels (for prediction, and vertical jobs' parties without
// the label). With schema.id, every row needs its id.
StatusOr<TabularData> ReadTabularCsv(const std::string& path, const TabularSchema& schema,
                                     const PreprocessConfig& preprocess, bool need_label = true);

// The sums of `table`'s rows, with at least two classes.
FeatureSums SumFeatures(const TabularData& table);

// The model's input: missing values filled and features scaled as
// preprocess.statistics and preprocess.scale say. InvalidArgument naming
// `where` when the table's features are not the statistics' (names and order)
// or a label is outside the statistics' classes.
StatusOr<std::shared_ptr<Dataset>> PrepareTabular(const TabularData& table,
                                                  const PreprocessConfig& preprocess,
                                                  const std::string& where);

// Image data a silo brings as a folder of IDX files: the sums of all its
// pixel values (scaled to [0, 1]) as one feature, "pixel", with the examples'
// shape and the rows per class.
FeatureSums SumPixels(const Dataset& images);

// The images as the model sees them: pixels in [0, 1], then scaled with the
// one "pixel" feature's statistics as preprocess.scale says. InvalidArgument
// naming `where` when the shape or classes differ from the statistics'.
StatusOr<std::shared_ptr<Dataset>> PrepareImages(std::shared_ptr<const Dataset> images,
                                                 const PreprocessConfig& preprocess,
                                                 const std::string& where);

// The schema of the rows a job's model reads, from its statistics: the
// columns in order, the one-hot ones categorical, the label column (read
// when present), missing values imputed with the federation's means. What
// `fedsilo predict` reads new rows with.
TabularSchema SchemaOfJob(const PreprocessConfig& preprocess);

// Whether `feature` is one of the one-hot columns the job's categories make
// ("merchant=atm").
bool IsOneHotFeature(const PreprocessConfig& preprocess, const std::string& feature);

// The model a job on the silos' own data trains: its input is the
// statistics' features (or, for images, their shape), its outputs their
// classes. REQUIRES: statistics are not empty.
ModelSpec TabularModelSpec(const JobConfig& job);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_TABULAR_H_
