#include "tracking/jsonl_metrics_sink.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "core/mutex.h"

namespace fedsilo::tracking {

StatusOr<std::unique_ptr<JsonlMetricsSink>> JsonlMetricsSink::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  return std::unique_ptr<JsonlMetricsSink>(new JsonlMetricsSink(path, file));
}

JsonlMetricsSink::~JsonlMetricsSink() {
  MutexLock lock(&mu_);
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
  std::string text = line.dump();
  if (const std::shared_ptr<const FileSealer> sealer = GetFileSealer(); sealer != nullptr) {
    // Encrypted at rest, one record per line: still JSON lines.
    text = nlohmann::json({{"sealed", absl::Base64Escape(sealer->Seal(text))}}).dump();
  }
  text += "\n";
  MutexLock lock(&mu_);
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

StatusOr<std::string> OpenMetricsLine(const std::string& line, absl::string_view source) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(source, ": not a JSON line"));
  if (!j.is_object() || !j.contains("sealed")) return line;
  std::string sealed;
  if (!j["sealed"].is_string() || !absl::Base64Unescape(j["sealed"].get<std::string>(), &sealed)) {
    return absl::DataLossError(absl::StrCat(source, ": a sealed line is not base64"));
  }
  return OpenProtectedBytes(std::move(sealed), source);
}

}  // namespace fedsilo::tracking
