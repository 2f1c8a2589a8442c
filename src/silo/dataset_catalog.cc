#include "silo/dataset_catalog.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"
#include "core/yaml_util.h"

namespace fedsilo::silo {

namespace {

// A list of column names at `node`, for datasets.<name>.<key>.
StatusOr<std::vector<std::string>> Columns(const std::string& path, const YAML::Node& node,
                                           const std::string& key) {
  std::vector<std::string> out;
  if (!node) return out;
  if (!node.IsSequence()) return YamlError(path, node, key + ": must be a list of column names");
  for (const auto& item : node) {
    if (!item.IsScalar() || item.Scalar().empty()) {
      return YamlError(path, item, key + ": must be a list of column names");
    }
    out.push_back(item.Scalar());
  }
  return out;
}

// A path in the catalog at `catalog`: "{silo}" replaced by the silo's name
// (when given), relative to the catalog's folder.
std::string SiloPath(const std::string& catalog, std::string value, const std::string& silo) {
  if (const size_t pos = value.find("{silo}"); pos != std::string::npos && !silo.empty()) {
    value.replace(pos, 6, silo);
  }
  std::filesystem::path p(value);
  if (p.is_relative()) p = std::filesystem::path(catalog).parent_path() / p;
  return p.lexically_normal().string();
}

}  // namespace

namespace {
StatusOr<DatasetCatalog> LoadDatasetCatalogUnguarded(const std::string& path,
                                                     const std::string& silo);
}  // namespace

StatusOr<DatasetCatalog> LoadDatasetCatalog(const std::string& path, const std::string& silo) {
  return GuardYaml<DatasetCatalog>(path, [&] { return LoadDatasetCatalogUnguarded(path, silo); });
}

namespace {
StatusOr<DatasetCatalog> LoadDatasetCatalogUnguarded(const std::string& path,
                                                     const std::string& silo) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto error = [&](const YAML::Node& at, absl::string_view message) {
    return YamlError(path, at, message);
  };
  FEDSILO_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, path));
  const YAML::Node datasets = root.IsMap() ? root["datasets"] : YAML::Node();
  if (!datasets || !datasets.IsMap() || datasets.size() == 0) {
    return error(root,
                 "expected 'datasets:' mapping names to {builtin: ..., share: job} or "
                 "{csv: file, label: column, ...}");
  }
  DatasetCatalog catalog;
  for (const auto& entry : datasets) {
    const std::string name = entry.first.as<std::string>();
    const std::string at = absl::StrCat("datasets.", name);
    const YAML::Node spec = entry.second;
    FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(
        path, spec, at,
        {"builtin", "share", "csv", "label", "id", "features", "categorical", "missing", "idx"}));
    DatasetEntry e;
    if (const YAML::Node builtin = spec["builtin"]) {
      e.builtin = builtin.IsScalar() ? builtin.Scalar() : "";
      if (!IsBuiltinDataset(e.builtin)) {
        return error(builtin, absl::StrCat(at, ".builtin: unknown data set '", e.builtin,
                                           "'; one of: ", absl::StrJoin(kKnownDatasets, ", ")));
      }
    }
    if (const YAML::Node share = spec["share"]) {
      if (!share.IsScalar() || share.Scalar() != "job") {
        return error(share, absl::StrCat(at, ".share: the only value is 'job'"));
      }
      e.share_by_job = true;
    }
    if (const YAML::Node csv = spec["csv"]) {
      if (!e.builtin.empty()) return error(csv, at + ": give either builtin or csv, not both");
      if (!csv.IsScalar() || csv.Scalar().empty()) {
        return error(csv, at + ".csv: must be a file name");
      }
      e.csv = SiloPath(path, csv.Scalar(), silo);
      if (const YAML::Node id = spec["id"]) {
        if (!id.IsScalar() || id.Scalar().empty()) {
          return error(id, at + ".id: must be a column name");
        }
        e.schema.id = id.Scalar();
      }
      // A vertical job's party other than its label owner has no label.
      const YAML::Node label = spec["label"];
      if (label || e.schema.id.empty()) {
        if (!label || !label.IsScalar() || label.Scalar().empty()) {
          return error(label ? label : spec,
                       at + ".label: is required: the column of classes (a table with an `id` "
                            "column may go without, as a vertical job's party)");
        }
        e.schema.label = label.Scalar();
      }
      FEDSILO_ASSIGN_OR_RETURN(e.schema.features,
                               Columns(path, spec["features"], at + ".features"));
      FEDSILO_ASSIGN_OR_RETURN(e.schema.categorical,
                               Columns(path, spec["categorical"], at + ".categorical"));
      if (const YAML::Node missing = spec["missing"]) {
        const std::string m = missing.IsScalar() ? missing.Scalar() : "";
        bool known = false;
        for (ml::MissingValues v :
             {ml::MissingValues::kError, ml::MissingValues::kDrop, ml::MissingValues::kImpute}) {
          if (m == ml::MissingValuesName(v)) {
            e.schema.missing = v;
            known = true;
          }
        }
        if (!known) {
          return error(missing, absl::StrCat(at, ".missing: unknown value '", m,
                                             "'; one of: error, drop, impute"));
        }
      }
    } else {
      for (const char* key : {"label", "id", "features", "categorical", "missing"}) {
        if (spec[key]) return error(spec[key], absl::StrCat(at, ".", key, ": needs csv"));
      }
    }
    if (const YAML::Node idx = spec["idx"]) {
      if (!e.builtin.empty() || !e.csv.empty()) {
        return error(idx, at + ": give one of builtin, csv and idx");
      }
      if (!idx.IsScalar() || idx.Scalar().empty()) {
        return error(idx, at + ".idx: must be a folder name");
      }
      e.idx = SiloPath(path, idx.Scalar(), silo);
    }
    if (e.builtin.empty() && e.csv.empty() && e.idx.empty()) {
      return error(spec,
                   at + ": needs builtin (a built-in data set), csv (a file) or idx (a folder)");
    }
    if (e.builtin.empty() && e.share_by_job) {
      return error(spec["share"], at + ".share: only for built-in data sets");
    }
    catalog[name] = e;
  }
  return catalog;
}
}  // namespace

}  // namespace fedsilo::silo
