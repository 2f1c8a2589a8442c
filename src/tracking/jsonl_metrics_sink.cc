#include "tracking/jsonl_metrics_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/mutex.h"

namespace fedsilo::tracking {

StatusOr<std::unique_ptr<JsonlMetricsSink>> JsonlMetricsSink::Open(const std::string& path) {
  // Lines already there (a resumed run) keep their numbers; a torn last line
  // (a crash mid-write) is cut off, so the next record starts a line.
  int64_t lines = 0;
  if (StatusOr<std::string> text = ReadFile(path); text.ok()) {
    lines = static_cast<int64_t>(std::count(text->begin(), text->end(), '\n'));
    const size_t whole = text->empty() ? 0 : text->rfind('\n') + 1;  // npos + 1 == 0
    if (whole != text->size() && ::truncate(path.c_str(), static_cast<off_t>(whole)) != 0) {
      return absl::InternalError(
          absl::StrCat(path, ": cannot cut a torn last line: ", std::strerror(errno)));
    }
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || ::fchmod(fd, 0600) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  std::FILE* file = ::fdopen(fd, "a");
  if (file == nullptr) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  return std::unique_ptr<JsonlMetricsSink>(new JsonlMetricsSink(path, file, lines));
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
  MutexLock lock(&mu_);
  // Encrypted at rest, one record per line: still JSON lines.
  const std::string text = SealLine(line.dump(), SealedLineName(path_, lines_ + 1)) + "\n";
  struct stat before {};  // every earlier record is flushed: the file's size
  const bool sized = ::fstat(::fileno(file_), &before) == 0;
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    const int err = errno;
    // Nothing half-written stays: the next record starts a line of its own.
    std::clearerr(file_);
    if (sized) (void)::ftruncate(::fileno(file_), before.st_size);
    return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(err)));
  }
  ++lines_;
  return absl::OkStatus();
}

StatusOr<std::string> OpenMetricsLine(absl::string_view line, const std::string& path,
                                      int64_t index) {
  return OpenLine(line, SealedLineName(path, index), absl::StrCat(path, " line ", index));
}

}  // namespace fedsilo::tracking
