// RoundRecorder: puts a run's rounds into the JobStore. As the orchestrator's
// MetricsSink it collects a round's metrics (passing each one on to `also`,
// e.g. metrics.jsonl); as its RoundObserver it commits the round, those
// metrics and the silos' part in one transaction, then logs the round and its
// dropped silos as events. Used by the orchestrator daemon's jobs and by
// `fedsilo run`, so both keep the same record.
//
// Thread safety: Record() may be called from any thread.
#ifndef FEDSILO_ORCHESTRATOR_ROUND_RECORDER_H_
#define FEDSILO_ORCHESTRATOR_ROUND_RECORDER_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "orchestrator/job_store.h"
#include "orchestrator/orchestrator.h"
#include "tracking/metrics_sink.h"

namespace fedsilo::orchestrator {

class RoundRecorder : public tracking::MetricsSink, public RoundObserver {
 public:
  // `store` must outlive the recorder; `also` may be null.
  RoundRecorder(JobStore* store, std::string job_id, tracking::MetricsSink* also = nullptr)
      : store_(store), job_id_(std::move(job_id)), also_(also) {}

  Status Record(const tracking::MetricRecord& record) override;
  // Commit(), then LogRound().
  Status OnRoundEnd(const RoundSummary& summary, const ModelState& global,
                    int total_rounds) override;

  // The round, its metrics and the silos' part, in one transaction.
  Status Commit(const RoundSummary& summary);
  // "round 3/10 done in 1.2s: ..." and one warning per dropped silo.
  Status LogRound(const RoundSummary& summary, int total_rounds);

 private:
  JobStore* store_;
  std::string job_id_;
  tracking::MetricsSink* also_;
  Mutex mu_;
  std::vector<MetricRow> rows_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_ROUND_RECORDER_H_
