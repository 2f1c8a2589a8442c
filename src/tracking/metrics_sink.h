// MetricsSink: where round metrics go (a JSONL file now; the run store and
// MLflow later). Metric names follow "{silo}/train_loss",
// "global/test_accuracy", so they can be exported as they are.
#ifndef FEDSILO_TRACKING_METRICS_SINK_H_
#define FEDSILO_TRACKING_METRICS_SINK_H_

#include <string>

#include "core/status.h"

namespace fedsilo::tracking {

struct MetricRecord {
  int round = 0;
  std::string source;  // a silo name, or "global"
  std::string name;    // "{source}/{metric}", e.g. "silo-1/train_loss"
  double value = 0;
  double time = 0;  // seconds since the Unix epoch
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // Thread-safe.
  virtual Status Record(const MetricRecord& record) = 0;
};

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_METRICS_SINK_H_
