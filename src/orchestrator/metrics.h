// OrchestratorMetrics: what the orchestrator daemon exposes at /metrics in
// the Prometheus text format (prometheus-cpp):
//   fedsilo_rounds_completed_total          counter
//   fedsilo_round_duration_seconds          histogram
//   fedsilo_silos_connected                 gauge
//   fedsilo_transport_bytes_sent_total      counter (to silos)
//   fedsilo_transport_bytes_received_total  counter (from silos)
//   fedsilo_jobs{state="queued|running|done|failed|aborted"}  gauge
//
// Thread safety: all methods are thread-safe.
#ifndef FEDSILO_ORCHESTRATOR_METRICS_H_
#define FEDSILO_ORCHESTRATOR_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace fedsilo::orchestrator {

class OrchestratorMetrics {
 public:
  OrchestratorMetrics();
  ~OrchestratorMetrics();

  // A committed round and how long it took.
  void ObserveRound(double seconds);

  // What the daemon's parts know at scrape time.
  struct Snapshot {
    int silos_connected = 0;
    uint64_t bytes_sent = 0;      // running totals
    uint64_t bytes_received = 0;
    std::map<std::string, int> jobs_by_state;
  };
  // The text exposition format, with `now`'s gauges and counters.
  std::string Render(const Snapshot& now);

 private:
  Mutex mu_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* rounds_;
  prometheus::Histogram* round_seconds_;
  prometheus::Gauge* silos_;
  prometheus::Counter* sent_;
  prometheus::Counter* received_;
  uint64_t sent_seen_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t received_seen_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, prometheus::Gauge*> jobs_;
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_METRICS_H_
