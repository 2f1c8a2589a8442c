// The data files a silo's operator points its catalog at: CSV tables (as
// numbers for built-in models, and as named, typed columns for tabular jobs)
// and IDX image and label files. Any bytes are either read or refused with an
// error naming the file; what is read is consistent (one label per row, every
// row as wide as the header says, no missing value left unless imputing).
#include <cmath>
#include <string>

#include "core/job_config.h"
#include "fuzz_util.h"
#include "ml/dataset_reader.h"
#include "ml/tabular.h"

namespace {

void CheckDataset(const fedsilo::ml::Dataset& d) {
  FEDSILO_FUZZ_CHECK(d.num_classes >= 1);
  for (int64_t label : d.labels) FEDSILO_FUZZ_CHECK(label >= 0 && label < d.num_classes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  if (size > 64 * 1024) return 0;
  fuzz::Parts parts(data, size);
  absl::string_view csv, images, labels;
  parts.Next(&csv);
  parts.Next(&images);
  parts.Next(&labels);

  const std::string csv_path = fuzz::TempFile("table.csv", csv);
  for (ml::CsvHeader header : {ml::CsvHeader::kNone, ml::CsvHeader::kNames}) {
    ml::CsvOptions options;
    options.header = header;
    auto table = ml::ReadCsvDataset(csv_path, options);
    if (table.ok()) CheckDataset(*table);
  }
  for (ml::MissingValues missing :
       {ml::MissingValues::kError, ml::MissingValues::kDrop, ml::MissingValues::kImpute}) {
    ml::TabularSchema schema;
    schema.label = "label";
    schema.categorical = {"kind"};
    schema.missing = missing;
    PreprocessConfig preprocess;
    preprocess.categories = {{"kind", {"a", "b"}}};
    auto table = ml::ReadTabularCsv(csv_path, schema, preprocess);
    if (!table.ok()) {
      // (What may leave the silo names the row and column, not the file.)
      FEDSILO_FUZZ_CHECK(!table.status().message().empty());
      continue;
    }
    FEDSILO_FUZZ_CHECK(!table->features.empty());
    FEDSILO_FUZZ_CHECK(table->values.size() % table->features.size() == 0);
    FEDSILO_FUZZ_CHECK(static_cast<int64_t>(table->labels.size()) == table->rows());
    if (missing != ml::MissingValues::kImpute) {
      // Refused or dropped: no missing value is left (imputing comes later).
      for (double v : table->values) FEDSILO_FUZZ_CHECK(!std::isnan(v));
    }
  }

  const std::string images_path = fuzz::TempFile("images.idx", images);
  const std::string labels_path = fuzz::TempFile("labels.idx", labels);
  auto idx = ml::ReadIdxDataset(images_path, labels_path, 10);
  if (idx.ok()) {
    CheckDataset(*idx);
    FEDSILO_FUZZ_CHECK(static_cast<int64_t>(idx->labels.size()) == idx->size());
  }
  return 0;
}
