// RoundRecorder: puts a run's rounds into the JobStore. As the orchestrator's
// MetricsSink it collects a round's metrics; as its RoundObserver it commits
// the round, those metrics and the silos' part in one transaction, passes
// the metrics on to `also` (metrics.jsonl, MLflow) once they are committed
// (round 0's, the federated statistics, at once),
// then logs the round and its dropped silos as events. A round lost before
// its commit (the process killed) is run again when the job resumes: `also`
// gets each round's metrics once. Used by every JobRun.
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
  // Commit(), LogRound(), then PassOn().
  Status OnRoundEnd(const RoundSummary& summary, const ModelState& global,
                    int total_rounds) override;

  // The round, its metrics and the silos' part, in one transaction.
  Status Commit(const RoundSummary& summary);
  // Passes the committed metrics on to `also`.
  Status PassOn();
  // "round 3/10 done in 1.2s: ..." and one warning per dropped silo.
  Status LogRound(const RoundSummary& summary, int total_rounds);

 private:
  JobStore* store_;
  std::string job_id_;
  tracking::MetricsSink* also_;
  Mutex mu_;
  std::vector<MetricRow> rows_ ABSL_GUARDED_BY(mu_);
  std::vector<tracking::MetricRecord> uncommitted_ ABSL_GUARDED_BY(mu_);  // for `also_`
  std::vector<tracking::MetricRecord> committed_ ABSL_GUARDED_BY(mu_);    // ... now theirs
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_ROUND_RECORDER_H_
