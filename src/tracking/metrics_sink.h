// MetricsSink: where round metrics go (metrics.jsonl, the run store, MLflow).
// Metric names follow "{silo}/train_loss", "global/test_accuracy", so they can
// be exported as they are.
#ifndef FEDSILO_TRACKING_METRICS_SINK_H_
#define FEDSILO_TRACKING_METRICS_SINK_H_

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace fedsilo::tracking {

struct MetricRecord {
  int round = 0;
  std::string source;  // a silo name, or "global"
  std::string name;    // "{source}/{metric}", e.g. "silo-1/train_loss"
  double value = 0;
  double time = 0;  // seconds since the Unix epoch
  // False when the silo's policy keeps its metrics inside the federation:
  // recorded in its own stores, never sent to an external tracker.
  bool exportable = true;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // Thread-safe.
  virtual Status Record(const MetricRecord& record) = 0;
};

// Passes every record on to each of its sinks (null ones are skipped); all
// of them see it, and the first error is returned.
class FanOutSink final : public MetricsSink {
 public:
  explicit FanOutSink(std::vector<MetricsSink*> sinks) : sinks_(std::move(sinks)) {}
  Status Record(const MetricRecord& record) override {
    Status first;
    for (MetricsSink* sink : sinks_) {
      if (sink == nullptr) continue;
      Status s = sink->Record(record);
      if (first.ok()) first = s;
    }
    return first;
  }

 private:
  std::vector<MetricsSink*> sinks_;
};

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_METRICS_SINK_H_
