#include "ml/dataset_reader.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/model_state.h"

namespace fedsilo::ml {
namespace {

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

StatusOr<IdxArray> ReadIdx(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<const ByteStore> bytes, ByteStore::ReadFile(path));
  const uint8_t* p = bytes->data();
  if (bytes->size() < 4 || p[0] != 0 || p[1] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an IDX file (bad magic number)"));
  }
  if (p[2] != 0x08) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": IDX data type 0x", absl::Hex(p[2]),
                     " is not supported (expected 0x08, unsigned byte)"));
  }
  const int rank = p[3];
  if (rank < 1 || rank > 4) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": IDX rank ", rank, " is not in [1, 4]"));
  }
  const size_t header = 4 + 4 * static_cast<size_t>(rank);
  if (bytes->size() < header) {
    return absl::DataLossError(absl::StrCat(path, ": truncated IDX header"));
  }
  IdxArray array;
  uint64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const uint32_t d = BigEndian32(p + 4 + 4 * i);
    array.dims.push_back(d);
    count *= d;
  }
  if (bytes->size() - header != count) {
    return absl::DataLossError(absl::StrCat(path, ": IDX header announces ", count,
                                            " values but the file holds ", bytes->size() - header,
                                            " (truncated or corrupted)"));
  }
  array.file = std::move(bytes);
  array.offset = header;
  return array;
}

StatusOr<Dataset> ReadIdxDataset(const std::string& images_path, const std::string& labels_path,
                                 int num_classes) {
  FEDSILO_ASSIGN_OR_RETURN(IdxArray images, ReadIdx(images_path));
  FEDSILO_ASSIGN_OR_RETURN(IdxArray labels, ReadIdx(labels_path));
  if (images.dims.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": expected images of rank 3, got ", ShapeToString(images.dims)));
  }
  if (labels.dims.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels_path, ": expected labels of rank 1, got ", ShapeToString(labels.dims)));
  }
  if (images.dims[0] != labels.dims[0]) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, " holds ", images.dims[0],
                                                   " images but ", labels_path, " holds ",
                                                   labels.dims[0], " labels"));
  }
  Dataset d;
  d.example_shape = {1, images.dims[1], images.dims[2]};
  d.num_classes = num_classes;
  d.byte_features = images.file;
  d.byte_offset = images.offset;
  d.byte_scale = 1.0f / 255.0f;
  d.labels.reserve(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels.values()[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(labels_path, ": label ",
                                                     int{labels.values()[i]}, " at index ", i,
                                                     " is not in [0, ", num_classes, ")"));
    }
    d.labels.push_back(labels.values()[i]);
  }
  return d;
}

bool ParseClassLabel(absl::string_view cell, int64_t* label) {
  double value = 0;
  if (!absl::SimpleAtod(cell, &value) || value < 0 || value != std::floor(value) || value > 1e6) {
    return false;
  }
  *label = static_cast<int64_t>(value);
  return true;
}

StatusOr<Dataset> ReadCsvDataset(const std::string& path, const CsvOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(std::shared_ptr<const ByteStore> bytes, ByteStore::ReadFile(path));
  const absl::string_view text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipWhitespace());
  Dataset d;
  size_t first = 0;
  int64_t announced_rows = -1, announced_features = -1;
  if (options.header != CsvHeader::kNone) {
    if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
    if (options.header == CsvHeader::kSklearn) {
      std::vector<absl::string_view> head = absl::StrSplit(lines[0], ',');
      if (head.size() < 2 ||
          !absl::SimpleAtoi(absl::StripAsciiWhitespace(head[0]), &announced_rows) ||
          !absl::SimpleAtoi(absl::StripAsciiWhitespace(head[1]), &announced_features)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":1: expected a scikit-learn header 'n_samples,n_features,...'"));
      }
    }
    first = 1;
  }
  int64_t columns = -1;
  int64_t max_label = -1;
  for (size_t li = first; li < lines.size(); ++li) {
    std::vector<absl::string_view> cells =
        absl::StrSplit(absl::StripTrailingAsciiWhitespace(lines[li]), ',');
    const int64_t n = static_cast<int64_t>(cells.size());
    if (columns < 0) {
      columns = n;
      if (columns < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", li + 1, ": need at least one feature and a label column"));
      }
    } else if (n != columns) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", li + 1, ": has ", n, " columns, earlier lines have ", columns));
    }
    const int64_t label_col = options.label_column < 0 ? columns - 1 : options.label_column;
    if (label_col >= columns) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": label column ", label_col,
                                                     " does not exist (", columns, " columns)"));
    }
    for (int64_t c = 0; c < columns; ++c) {
      const absl::string_view cell = absl::StripAsciiWhitespace(cells[static_cast<size_t>(c)]);
      if (c == label_col) {
        int64_t label = 0;
        if (!ParseClassLabel(cell, &label)) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", li + 1, ": label '", cell,
                                                         "' is not a non-negative integer"));
        }
        d.labels.push_back(label);
        max_label = std::max(max_label, label);
      } else {
        double value = 0;
        if (!absl::SimpleAtod(cell, &value) || !std::isfinite(value)) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", li + 1, ": column ", c + 1,
                                                         ": '", cell, "' is not a finite number"));
        }
        d.features.push_back(static_cast<float>(value));
      }
    }
  }
  if (d.labels.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no data rows"));
  const int64_t num_features = columns - 1;
  if (announced_rows >= 0 && (announced_rows != d.size() || announced_features != num_features)) {
    return absl::DataLossError(
        absl::StrCat(path, ": header announces ", announced_rows, " rows of ", announced_features,
                     " features, file holds ", d.size(), " rows of ", num_features));
  }
  d.num_classes = options.num_classes > 0 ? options.num_classes : static_cast<int>(max_label + 1);
  if (max_label >= d.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": label ", max_label, " is not in [0, ", d.num_classes, ")"));
  }
  d.example_shape =
      options.example_shape.empty() ? std::vector<int64_t>{num_features} : options.example_shape;
  if (d.feature_size() != num_features) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", num_features,
                                                   " features do not fit example shape ",
                                                   ShapeToString(d.example_shape)));
  }
  return d;
}

}  // namespace fedsilo::ml
