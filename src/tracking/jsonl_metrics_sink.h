// JsonlMetricsSink: appends one JSON object per metric to a file, e.g.
//   {"round":3,"source":"silo-1","name":"silo-1/train_loss","value":0.41,"time":1795.2}
// Each line is flushed as it is written, so the file can be followed while a
// run goes on. Thread-safe.
//
// With a FileSealer installed (encryption at rest, core/file_seal.h) each line
// is {"sealed": "<base64 of the sealed record>"}; OpenMetricsLine() reads both.
#ifndef FEDSILO_TRACKING_JSONL_METRICS_SINK_H_
#define FEDSILO_TRACKING_JSONL_METRICS_SINK_H_

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
  JsonlMetricsSink(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}

  std::string path_;
  Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_);
};

// The record of one line of a metrics file, opening sealed lines with the
// installed sealer. Errors name `source`.
StatusOr<std::string> OpenMetricsLine(const std::string& line, absl::string_view source);

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_JSONL_METRICS_SINK_H_
