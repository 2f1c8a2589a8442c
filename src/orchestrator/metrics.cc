#include "orchestrator/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace fedsilo::orchestrator {

OrchestratorMetrics::OrchestratorMetrics()
    : registry_(std::make_shared<prometheus::Registry>()) {
  rounds_ = &prometheus::BuildCounter()
                 .Name("fedsilo_rounds_completed_total")
                 .Help("Federated rounds committed, over all jobs")
                 .Register(*registry_)
                 .Add({});
  round_seconds_ = &prometheus::BuildHistogram()
                        .Name("fedsilo_round_duration_seconds")
                        .Help("Wall time of a committed round: broadcast, training, aggregation")
                        .Register(*registry_)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800});
  silos_ = &prometheus::BuildGauge()
                .Name("fedsilo_silos_connected")
                .Help("Silos with an open session")
                .Register(*registry_)
                .Add({});
  sent_ = &prometheus::BuildCounter()
               .Name("fedsilo_transport_bytes_sent_total")
               .Help("Bytes of protocol messages sent to silos")
               .Register(*registry_)
               .Add({});
  received_ = &prometheus::BuildCounter()
                   .Name("fedsilo_transport_bytes_received_total")
                   .Help("Bytes of protocol messages received from silos")
                   .Register(*registry_)
                   .Add({});
  auto& jobs = prometheus::BuildGauge()
                   .Name("fedsilo_jobs")
                   .Help("Jobs in the store, by state")
                   .Register(*registry_);
  for (const char* state : {"queued", "running", "done", "failed", "aborted"}) {
    jobs_[state] = &jobs.Add({{"state", state}});
  }
}

OrchestratorMetrics::~OrchestratorMetrics() = default;

void OrchestratorMetrics::ObserveRound(double seconds) {
  rounds_->Increment();
  round_seconds_->Observe(seconds);
}

std::string OrchestratorMetrics::Render(const Snapshot& now) {
  MutexLock lock(&mu_);
  silos_->Set(now.silos_connected);
  if (now.bytes_sent > sent_seen_) sent_->Increment(static_cast<double>(now.bytes_sent - sent_seen_));
  if (now.bytes_received > received_seen_) {
    received_->Increment(static_cast<double>(now.bytes_received - received_seen_));
  }
  sent_seen_ = std::max(sent_seen_, now.bytes_sent);
  received_seen_ = std::max(received_seen_, now.bytes_received);
  for (auto& [state, gauge] : jobs_) {
    auto it = now.jobs_by_state.find(state);
    gauge->Set(it == now.jobs_by_state.end() ? 0 : it->second);
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace fedsilo::orchestrator
