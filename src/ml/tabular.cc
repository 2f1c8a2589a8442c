#include "ml/tabular.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "ml/byte_store.h"
#include "ml/dataset_reader.h"

namespace fedsilo::ml {
namespace {

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

// Splits one CSV line; a field in double quotes may hold commas, and "" is a
// quote inside it.
std::vector<std::string> SplitCsvLine(absl::string_view line) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        cells.back() += ch;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      cells.emplace_back();
    } else {
      cells.back() += ch;
    }
  }
  for (std::string& c : cells) c = std::string(absl::StripAsciiWhitespace(c));
  return cells;
}

bool IsMissing(absl::string_view cell) {
  const std::string lower = absl::AsciiStrToLower(cell);
  return lower.empty() || lower == "na" || lower == "nan" || lower == "null" || lower == "?";
}

// How one output column block is made from a file column.
struct ColumnPlan {
  std::string name;
  size_t file_column = 0;
  const std::vector<std::string>* vocabulary = nullptr;  // categorical when set
};

Status RequireStatistics(const PreprocessConfig& preprocess, const std::string& where) {
  if (!preprocess.statistics.empty()) return absl::OkStatus();
  return Shareable(absl::FailedPreconditionError(absl::StrCat(
      where,
      ": the job has no preprocess.statistics (the federation computes them before the "
      "first round)")));
}

// Every label of `d` is one of its (the job's) classes.
Status CheckLabels(const Dataset& d, const std::string& where) {
  for (int64_t l : d.labels) {
    if (l >= d.num_classes) {
      return DataError(absl::StatusCode::kInvalidArgument,
                       absl::StrCat(where, ": a row's label is not one of the job's ",
                                    d.num_classes, " classes"),
                       absl::StrCat("label ", l));
    }
  }
  return absl::OkStatus();
}

// A one-hot feature's name: its column and its value.
std::string OneHotName(const std::string& column, const std::string& value) {
  return column + "=" + value;
}

// A CSV file's header: its column names, and where each is.
struct HeaderColumns {
  std::vector<std::string> names;
  std::map<std::string, size_t> column_of;
};

StatusOr<HeaderColumns> ParseHeader(absl::string_view line, const std::string& path) {
  HeaderColumns header;
  header.names = SplitCsvLine(line);
  for (size_t c = 0; c < header.names.size(); ++c) {
    if (header.names[c].empty()) {
      return DataError(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("column ", c + 1, " has no name in the header"), path);
    }
    if (!header.column_of.emplace(header.names[c], c).second) {
      return DataError(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("column '", header.names[c], "' appears twice in the header"),
                       path);
    }
  }
  return header;
}

// Where column `name` is; an error naming its `role` when the header lacks it.
StatusOr<size_t> FindColumn(const HeaderColumns& header, const std::string& name,
                            absl::string_view role, const std::string& path) {
  auto it = header.column_of.find(name);
  if (it == header.column_of.end()) {
    return DataError(absl::StatusCode::kInvalidArgument,
                     absl::StrCat(role, " column '", name, "' is not in the file's header"),
                     absl::StrCat(path, ": columns: ", absl::StrJoin(header.names, ", ")));
  }
  return it->second;
}

// How a file's data lines become a table's rows.
struct TableLayout {
  size_t columns = 0;            // in the header
  int64_t label_column = -1;     // -1: the file has no label column
  int64_t id_column = -1;        // -1: no id column (TabularSchema::id)
  std::vector<ColumnPlan> plan;  // the feature columns, in the table's order
  std::string label;             // the label column's name, for errors
  std::string id;                // the id column's name, for errors
  MissingValues missing = MissingValues::kError;
  bool need_label = true;
};

// Resolves `schema` against the header; the table's feature names go to
// `features`. Vocabularies point into `preprocess`.
StatusOr<TableLayout> PlanColumns(const HeaderColumns& header, const TabularSchema& schema,
                                  const PreprocessConfig& preprocess, bool need_label,
                                  const std::string& path, std::vector<std::string>* features) {
  TableLayout layout;
  layout.columns = header.names.size();
  layout.label = schema.label;
  layout.id = schema.id;
  layout.missing = schema.missing;
  layout.need_label = need_label;
  if (schema.label.empty() && need_label) {
    return DataError(absl::StatusCode::kInvalidArgument,
                     "the catalog names no label column for this table: it serves vertical jobs "
                     "only, as a party that does not hold the label",
                     path);
  }
  if (auto it = header.column_of.find(schema.label); it != header.column_of.end()) {
    layout.label_column = static_cast<int64_t>(it->second);
  } else if (need_label) {
    FEDSILO_RETURN_IF_ERROR(FindColumn(header, schema.label, "label", path).status());
  }
  if (!schema.id.empty()) {
    if (schema.id == schema.label) {
      return DataError(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("column '", schema.id, "' is both the id and the label"), path);
    }
    FEDSILO_ASSIGN_OR_RETURN(size_t column, FindColumn(header, schema.id, "id", path));
    layout.id_column = static_cast<int64_t>(column);
  }
  std::vector<std::string> feature_columns = schema.features;
  if (feature_columns.empty()) {
    for (const std::string& h : header.names) {
      if (h != schema.label && h != schema.id) feature_columns.push_back(h);
    }
  }
  for (const std::string& c : schema.categorical) {
    if (std::find(feature_columns.begin(), feature_columns.end(), c) == feature_columns.end()) {
      return DataError(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("categorical column '", c, "' is not one of the features"),
                       path);
    }
  }
  for (const std::string& name : feature_columns) {
    if (name == schema.label || name == schema.id) {
      return DataError(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("column '", name, "' is both the ",
                                    name == schema.label ? "label" : "id", " and a feature"),
                       path);
    }
    FEDSILO_ASSIGN_OR_RETURN(size_t column, FindColumn(header, name, "feature", path));
    ColumnPlan p{name, column, nullptr};
    if (std::find(schema.categorical.begin(), schema.categorical.end(), name) !=
        schema.categorical.end()) {
      for (const auto& [col, values] : preprocess.categories) {
        if (col == name) p.vocabulary = &values;
      }
      if (p.vocabulary == nullptr) {
        return DataError(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("categorical column '", name,
                                      "' has no vocabulary: the job's preprocess.categories must "
                                      "list its values (the same for every silo)"),
                         path);
      }
      for (const std::string& v : *p.vocabulary) features->push_back(OneHotName(name, v));
    } else {
      features->push_back(name);
    }
    layout.plan.push_back(p);
  }
  if (features->empty()) {
    return DataError(absl::StatusCode::kInvalidArgument, "no feature columns", path);
  }
  return layout;
}

// One data line, for its errors: they name the row (1: the first after the
// header) and the column; the cell, the line and the file stay in the
// detail, for the silo's log.
struct DataLine {
  size_t li;          // the line's index in the file (the header's is 0)
  std::string where;  // "path:line"

  Status Bad(const std::string& column, absl::string_view problem, absl::string_view detail) const {
    return DataError(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("row ", li, column.empty() ? "" : ", column '", column,
                                  column.empty() ? "" : "'", ": ", problem),
                     absl::StrCat(where, detail.empty() ? "" : ": ", detail));
  }
};

// A missing value in `column`: an error, or `*drop` set, as the schema says.
Status OnMissing(const TableLayout& layout, const DataLine& line, const std::string& column,
                 bool* drop) {
  if (layout.missing == MissingValues::kError) {
    return line.Bad(
        column, "missing value (the catalog's `missing:` can drop such rows or impute them)", "");
  }
  if (layout.missing == MissingValues::kDrop) *drop = true;
  return absl::OkStatus();
}

// Appends column `p`'s values for `cell` to `row`.
Status AppendCell(const TableLayout& layout, const ColumnPlan& p, const std::string& cell,
                  const DataLine& line, std::vector<double>* row, bool* drop) {
  if (p.vocabulary != nullptr) {
    const size_t first = row->size();
    row->resize(first + p.vocabulary->size(), 0.0);
    if (IsMissing(cell)) return OnMissing(layout, line, p.name, drop);
    auto it = std::find(p.vocabulary->begin(), p.vocabulary->end(), cell);
    if (it == p.vocabulary->end()) {
      // No row number here: the job chooses the vocabulary, and with the
      // row a few jobs would tell one row's value. Only that some value
      // of the column is outside it leaves the silo.
      return DataError(
          absl::StatusCode::kInvalidArgument,
          absl::StrCat("column '", p.name,
                       "': a value outside the job's vocabulary (preprocess.categories.", p.name,
                       ")"),
          absl::StrCat(line.where, ": '", cell, "' is not one of ",
                       absl::StrJoin(*p.vocabulary, ", ")));
    }
    (*row)[first + static_cast<size_t>(it - p.vocabulary->begin())] = 1.0;
    return absl::OkStatus();
  }
  if (IsMissing(cell)) {
    FEDSILO_RETURN_IF_ERROR(OnMissing(layout, line, p.name, drop));
    row->push_back(kMissing);
    return absl::OkStatus();
  }
  double value = 0;
  if (!absl::SimpleAtod(cell, &value) || !std::isfinite(value)) {
    return line.Bad(p.name,
                    "not a number (list the column under `categorical:` if it holds categories)",
                    absl::StrCat("'", cell, "'"));
  }
  row->push_back(value);
  return absl::OkStatus();
}

// Adds data line `li` of `path` to `table`, unless a missing value drops it.
// `row` is scratch space.
Status ReadDataLine(const TableLayout& layout, const std::string& path, size_t li,
                    absl::string_view text, std::vector<double>* row, TabularData* table) {
  const std::vector<std::string> cells = SplitCsvLine(text);
  const DataLine line{li, absl::StrCat(path, ":", li + 1)};
  if (cells.size() != layout.columns) {
    return line.Bad(
        "", absl::StrCat("has ", cells.size(), " columns, the header has ", layout.columns), "");
  }
  bool drop = false;
  row->clear();
  for (const ColumnPlan& p : layout.plan) {
    FEDSILO_RETURN_IF_ERROR(AppendCell(layout, p, cells[p.file_column], line, row, &drop));
  }
  int64_t label = -1;
  if (layout.label_column >= 0) {
    const std::string& cell = cells[static_cast<size_t>(layout.label_column)];
    if (!(IsMissing(cell) && !layout.need_label) && !ParseClassLabel(cell, &label)) {
      return line.Bad(layout.label, "the label is not a class (0, 1, 2, ...)",
                      absl::StrCat("'", cell, "'"));
    }
  }
  std::string id;
  if (layout.id_column >= 0) {
    id = cells[static_cast<size_t>(layout.id_column)];
    if (IsMissing(id)) return line.Bad(layout.id, "the row has no id", "");
  }
  if (drop) return absl::OkStatus();
  table->values.insert(table->values.end(), row->begin(), row->end());
  if (layout.label_column >= 0) table->labels.push_back(label);
  if (layout.id_column >= 0) table->ids.push_back(std::move(id));
  return absl::OkStatus();
}

}  // namespace

absl::string_view MissingValuesName(MissingValues missing) {
  switch (missing) {
    case MissingValues::kError:
      return "error";
    case MissingValues::kDrop:
      return "drop";
    case MissingValues::kImpute:
      return "impute";
  }
  return "?";
}

TabularData TabularData::Subset(const std::vector<int64_t>& indices) const {
  TabularData out;
  out.label = label;
  out.features = features;
  out.values.reserve(indices.size() * features.size());
  for (int64_t i : indices) {
    out.values.insert(out.values.end(), row(i), row(i) + features.size());
    if (!labels.empty()) out.labels.push_back(labels[static_cast<size_t>(i)]);
    if (!ids.empty()) out.ids.push_back(ids[static_cast<size_t>(i)]);
  }
  return out;
}

StatusOr<TabularData> ReadTabularCsv(const std::string& path, const TabularSchema& schema,
                                     const PreprocessConfig& preprocess, bool need_label) {
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<const ByteStore> bytes, ByteStore::ReadFile(path));
  const absl::string_view text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  while (!lines.empty() && absl::StripAsciiWhitespace(lines.back()).empty()) lines.pop_back();
  if (lines.empty()) {
    return DataError(absl::StatusCode::kInvalidArgument,
                     "the file is empty (expected a header line)", path);
  }
  FEDSILO_ASSIGN_OR_RETURN(const HeaderColumns header, ParseHeader(lines[0], path));
  TabularData table;
  table.label = schema.label;
  FEDSILO_ASSIGN_OR_RETURN(
      const TableLayout layout,
      PlanColumns(header, schema, preprocess, need_label, path, &table.features));
  std::vector<double> row;
  for (size_t li = 1; li < lines.size(); ++li) {
    if (absl::StripAsciiWhitespace(lines[li]).empty()) continue;
    FEDSILO_RETURN_IF_ERROR(ReadDataLine(layout, path, li, lines[li], &row, &table));
  }
  if (table.values.empty()) {
    return DataError(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("no data rows", lines.size() > 1 ? " left" : ""), path);
  }
  if (std::find(table.labels.begin(), table.labels.end(), -1) != table.labels.end()) {
    table.labels.clear();  // some rows lack a label: predict without one
  }
  return table;
}

FeatureSums SumFeatures(const TabularData& table) {
  FeatureSums sums = FeatureSums::For(table.label, table.features, NumClassesOf(table.labels));
  for (int64_t i = 0; i < table.rows(); ++i) {
    sums.AddRow(table.row(i), table.labels.empty() ? 0 : table.labels[static_cast<size_t>(i)]);
  }
  return sums;
}

StatusOr<std::shared_ptr<Dataset>> PrepareTabular(const TabularData& table,
                                                  const PreprocessConfig& preprocess,
                                                  const std::string& where) {
  FEDSILO_RETURN_IF_ERROR(RequireStatistics(preprocess, where));
  const FeatureStatistics& st = preprocess.statistics;
  if (table.features != st.features) {
    const auto first_difference = std::mismatch(st.features.begin(), st.features.end(),
                                                table.features.begin(), table.features.end());
    const size_t i = static_cast<size_t>(first_difference.first - st.features.begin());
    return Shareable(absl::InvalidArgumentError(
        absl::StrCat(where, ": features do not match the job's: feature ", i + 1, " is '",
                     i < table.features.size() ? table.features[i] : "(none)", "', the job's is '",
                     i < st.features.size() ? st.features[i] : "(none)", "' (",
                     table.features.size(), " features against ", st.features.size(), ")")));
  }
  const size_t n = st.features.size();
  std::vector<double> fill(n), center(n), divisor(n);
  for (size_t j = 0; j < n; ++j) {
    fill[j] = st.Fill(j);
    center[j] = st.Center(j, preprocess.scale);
    divisor[j] = st.Divisor(j, preprocess.scale);
  }
  auto d = std::make_shared<Dataset>();
  d->name = where;
  d->example_shape = {static_cast<int64_t>(n)};
  d->num_classes = static_cast<int>(st.class_counts.size());
  d->features.resize(table.values.size());
  for (int64_t i = 0; i < table.rows(); ++i) {
    const double* in = table.row(i);
    float* out = d->features.data() + static_cast<size_t>(i) * n;
    for (size_t j = 0; j < n; ++j) {
      const double v = std::isnan(in[j]) ? fill[j] : in[j];
      out[j] = static_cast<float>((v - center[j]) / divisor[j]);
    }
  }
  d->labels = table.labels;
  if (d->labels.empty()) d->labels.assign(static_cast<size_t>(table.rows()), 0);
  FEDSILO_RETURN_IF_ERROR(CheckLabels(*d, where));
  return d;
}

FeatureSums SumPixels(const Dataset& images) {
  FeatureSums sums = FeatureSums::For("label", {"pixel"}, NumClassesOf(images.labels));
  sums.shape = images.example_shape;
  std::vector<float> row(static_cast<size_t>(images.feature_size()));
  for (int64_t i = 0; i < images.size(); ++i) {
    ++sums.class_counts[static_cast<size_t>(images.labels[static_cast<size_t>(i)])];
    images.CopyExample(i, row.data());
    for (float v : row) sums.AddValue(0, v);
  }
  return sums;
}

StatusOr<std::shared_ptr<Dataset>> PrepareImages(std::shared_ptr<const Dataset> images,
                                                 const PreprocessConfig& preprocess,
                                                 const std::string& where) {
  FEDSILO_RETURN_IF_ERROR(RequireStatistics(preprocess, where));
  const FeatureStatistics& st = preprocess.statistics;
  if (st.shape != images->example_shape) {
    return Shareable(absl::InvalidArgumentError(absl::StrCat(
        where, ": images of shape ", ShapeToString(images->example_shape), " are not the job's ",
        st.shape.empty() ? std::string("(a table)") : ShapeToString(st.shape))));
  }
  auto d = std::make_shared<Dataset>(*images);
  d->num_classes = static_cast<int>(st.class_counts.size());
  FEDSILO_RETURN_IF_ERROR(CheckLabels(*d, where));
  if (preprocess.scale == ScaleKind::kNone) return d;  // bytes, scaled to [0, 1] in batches
  const double center = st.Center(0, preprocess.scale), divisor = st.Divisor(0, preprocess.scale);
  const int64_t f = d->feature_size();
  d->features.resize(static_cast<size_t>(d->size() * f));
  for (int64_t i = 0; i < d->size(); ++i) {
    float* row = d->features.data() + i * f;
    images->CopyExample(i, row);
    for (int64_t j = 0; j < f; ++j) row[j] = static_cast<float>((row[j] - center) / divisor);
  }
  d->byte_features.reset();
  return std::shared_ptr<Dataset>(std::move(d));
}

bool IsOneHotFeature(const PreprocessConfig& preprocess, const std::string& feature) {
  for (const auto& [column, values] : preprocess.categories) {
    for (const std::string& v : values) {
      if (OneHotName(column, v) == feature) return true;
    }
  }
  return false;
}

TabularSchema SchemaOfJob(const PreprocessConfig& preprocess) {
  const FeatureStatistics& st = preprocess.statistics;
  TabularSchema schema;
  schema.label = st.label;
  schema.missing = MissingValues::kImpute;
  for (const std::string& feature : st.features) {
    std::string column = feature;
    for (const auto& category : preprocess.categories) {
      const std::string& categorical = category.first;  // (a lambda cannot capture a binding)
      const std::vector<std::string>& values = category.second;
      if (std::find_if(values.begin(), values.end(), [&](const std::string& v) {
            return OneHotName(categorical, v) == feature;
          }) == values.end()) {
        continue;
      }
      column = categorical;
      if (schema.categorical.empty() || schema.categorical.back() != column) {
        schema.categorical.push_back(column);
      }
    }
    if (schema.features.empty() || schema.features.back() != column) {
      schema.features.push_back(column);
    }
  }
  return schema;
}

ModelSpec TabularModelSpec(const JobConfig& job) {
  const FeatureStatistics& st = job.preprocess.statistics;
  std::vector<int64_t> input = st.shape;
  if (input.empty()) input = {static_cast<int64_t>(st.features.size())};
  return ModelSpec{job.model, input, static_cast<int>(st.class_counts.size())};
}

}  // namespace fedsilo::ml
