#include "tracking/jsonl_metrics_sink.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace fedsilo::tracking {

StatusOr<std::unique_ptr<JsonlMetricsSink>> JsonlMetricsSink::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  return std::unique_ptr<JsonlMetricsSink>(new JsonlMetricsSink(path, file));
}

JsonlMetricsSink::~JsonlMetricsSink() {
  std::lock_guard<std::mutex> lock(mu_);
  std::fclose(file_);
}

Status JsonlMetricsSink::Record(const MetricRecord& record) {
  nlohmann::json line = {{"round", record.round},
                         {"source", record.source},
                         {"name", record.name},
                         {"time", record.time}};
  // JSON has no NaN: a non-finite value is written as null.
  if (std::isfinite(record.value)) {
    line["value"] = record.value;
  } else {
    line["value"] = nullptr;
  }
  const std::string text = line.dump() + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::tracking
