// JsonlMetricsSink: appends one JSON object per metric to a file, e.g.
//   {"round":3,"source":"silo-1","name":"silo-1/train_loss","value":0.41,"time":1795.2}
// Each line is flushed as it is written, so the file can be followed while a
// run goes on. Thread-safe.
//
// With a FileSealer installed (encryption at rest, core/file_seal.h) each line
// is {"sealed":"<base64 of the sealed record>"}, bound to the file and its line
// number; OpenMetricsLine() reads both. The file is private (mode 0600).
#ifndef FEDSILO_TRACKING_JSONL_METRICS_SINK_H_
#define FEDSILO_TRACKING_JSONL_METRICS_SINK_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "core/mutex.h"
#include "core/status.h"
#include "tracking/metrics_sink.h"

namespace fedsilo::tracking {

class JsonlMetricsSink : public MetricsSink {
 public:
  // Opens `path` for appending. Internal error naming the file if it cannot.
  static StatusOr<std::unique_ptr<JsonlMetricsSink>> Open(const std::string& path);
  ~JsonlMetricsSink() override;

  Status Record(const MetricRecord& record) override;

 private:
  JsonlMetricsSink(std::string path, std::FILE* file, int64_t lines)
      : path_(std::move(path)), file_(file), lines_(lines) {}

  std::string path_;
  Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_);
  int64_t lines_ ABSL_GUARDED_BY(mu_);  // already in the file
};

// The record of line `index` (from 1) of the metrics file `path`, opening
// sealed lines with the installed sealer. Errors name the file.
StatusOr<std::string> OpenMetricsLine(absl::string_view line, const std::string& path,
                                      int64_t index);

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_JSONL_METRICS_SINK_H_
