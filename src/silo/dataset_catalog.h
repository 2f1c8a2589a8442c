// A silo's dataset catalog (datasets.yaml): the data sets it offers to jobs,
// by name -- built-in ones, its own CSV tables and IDX image folders -- and
// where their files are. Names are what jobs and the orchestrator see; paths
// never leave the silo.
#ifndef FEDSILO_SILO_DATASET_CATALOG_H_
#define FEDSILO_SILO_DATASET_CATALOG_H_

#include <map>
#include <string>

#include "core/status.h"
#include "ml/tabular.h"

namespace fedsilo::silo {

struct DatasetEntry {
  std::string builtin;        // "mnist", "digits", "breast_cancer"
  bool share_by_job = false;  // `share: job`
  std::string csv;            // a CSV file
  ml::TabularSchema schema;   // csv only
  std::string idx;            // or a folder of IDX files
};

using DatasetCatalog = std::map<std::string, DatasetEntry>;

// Reads datasets.yaml; InvalidArgument naming the file, line and key. With
// `silo` given, "{silo}" in csv paths becomes that name (one catalog for the
// silos of a simulation, or of a fleet with like-named files).
StatusOr<DatasetCatalog> LoadDatasetCatalog(const std::string& path, const std::string& silo = "");

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_DATASET_CATALOG_H_
