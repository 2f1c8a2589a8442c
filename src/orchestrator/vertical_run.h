// VerticalRun: the orchestrator's side of a vertical job (docs/vertical.md),
// wherever its parties are. It relays the private set intersection (each
// party's blinded ids to every other party to be blinded again, then the
// intersection of the fully blinded sets) and then, round by round, the
// split model's steps: the parties' cut-layer outputs of a batch to the
// label owner, and the gradients it sends back to each party. It sees the
// sizes of the parties' sets and of their pairwise intersections, the
// cut-layer outputs and their gradients; never an id, a feature or a label.
//
// Thread safety: one thread uses a VerticalRun; `stop` may be raised from
// any other.
#ifndef FEDSILO_ORCHESTRATOR_VERTICAL_RUN_H_
#define FEDSILO_ORCHESTRATOR_VERTICAL_RUN_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "orchestrator/orchestrator.h"
#include "tracking/metrics_sink.h"
#include "transport/vertical_party.h"

namespace fedsilo::orchestrator {

struct VerticalRunOptions {
  // Binds the intersection's points to this run: "fedsilo/vertical/<run id>".
  std::string domain;
  const std::atomic<bool>* stop = nullptr;   // raised: Cancelled before the next round
  tracking::MetricsSink* metrics = nullptr;  // may be null
  RoundObserver* observer = nullptr;         // told of each round; may be null
  // What the run has to say besides its rounds (may be null).
  std::function<void(const std::string& level, const std::string& message)> event;
};

struct VerticalAlignment {
  int64_t intersection = 0;  // people every party holds
  int64_t train = 0, test = 0;
};

struct VerticalResult {
  VerticalAlignment alignment;
  int rounds_completed = 0;
  std::map<std::string, double> final_metrics;  // on the test rows, after the last round
  // The rounds' wall time, and how much of it the parties computed (on the
  // critical path: the slowest of the parties asked at once): the rest is
  // the run's own overhead.
  double round_seconds = 0;
  double party_seconds = 0;
};

class VerticalRun {
 public:
  // `parties` in the job's order (federation.silos); not owned.
  VerticalRun(JobConfig job, std::vector<transport::VerticalParty*> parties,
              VerticalRunOptions options);
  ~VerticalRun();

  // The private set intersection, and every party's rows aligned. Fails,
  // naming the party, on a party's error, when the parties share nobody, or
  // when a party's aligned rows disagree with the others'.
  StatusOr<VerticalAlignment> Align();
  // Every round after Align(); each round trains training.local_epochs
  // passes over the training rows in batches, then scores the test rows.
  // With vertical.predict_with, one round without training scores every
  // aligned row (the label owner keeps the predictions; its metrics, when
  // its rows have labels).
  StatusOr<VerticalResult> Train(const VerticalAlignment& alignment);

 private:
  // Runs fn(i) for the parties `indices` at once; the first error, in order.
  Status OnEach(const std::vector<size_t>& indices, const std::function<Status(size_t)>& fn);
  // Every other party's cut-layer outputs of `rows`, in others_' order,
  // each checked for its size and for values that are not finite.
  StatusOr<std::vector<std::vector<float>>> CutOutputs(const transport::RowSelection& rows);
  Status TrainBatch(const std::vector<int64_t>& positions);
  // Scores the test rows; the label owner's metrics of the round.
  StatusOr<transport::RoundMetrics> Evaluate(int64_t test_rows);
  Status Record(int round, const std::string& metric, double value);
  void Event(const std::string& level, const std::string& message);

  JobConfig job_;
  std::vector<transport::VerticalParty*> parties_;
  VerticalRunOptions options_;
  size_t owner_ = 0;            // the label owner's index
  std::vector<size_t> others_;  // every other party's
  std::vector<size_t> slot_;    // party index -> its place in others_
  ThreadPool pool_;
  double party_seconds_ = 0;  // see VerticalResult
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_VERTICAL_RUN_H_
