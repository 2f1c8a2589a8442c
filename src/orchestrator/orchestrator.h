// Orchestrator: runs a job's rounds. Each round it samples silos, sends them the
// global model, folds their updates into the strategy as they arrive, evaluates
// the new global model on the held-out test set and records metrics; its
// observer makes the round durable (JobRun, orchestrator/job_run.h).
//
// Silos train concurrently on a thread pool; updates are folded in the order
// the silos were sampled (an early arrival waits for its predecessors), so the
// same job and seed give the same model bit for bit at any thread count.
// A silo that fails or returns a bad update (wrong layout, NaN, no examples) is
// dropped from the round with a warning naming it; the round fails when fewer
// than `federation.min_silos` remain. A round that failed because silos left
// or timed out, before anything was aggregated, is run again from the same
// global model once its sampled silos are reachable (federation.round_retries
// times, each waiting up to wait_for_silos): sampling and seeds depend only on
// the round, so the job ends with the model of a run nobody left. Metrics of
// a failed attempt are dropped, so every round is recorded once. Not for
// SCAFFOLD (its silos keep state) nor under local DP (each attempt would be
// charged to the silos' budgets).
//
// With privacy.dp.mode central, updates are clipped and weighted equally, and
// the round's mean gets Gaussian noise (privacy/central_dp.h); the run then
// records global/epsilon and global/clip_norm each round.
//
// With privacy.secure_aggregation, silos keep their updates: after training
// they run the secure-aggregation stages (secure/secagg.h) with the
// orchestrator, which only ever holds masked vectors and their unmasked sum.
// The round fails, with nothing applied, when fewer silos than the threshold
// stay to the end. Central DP then clips in the silos (at the clip norm the
// orchestrator sends) and adds its noise to the unmasked mean.
//
// Thread safety: Run() is called once, from one thread.
#ifndef FEDSILO_ORCHESTRATOR_ORCHESTRATOR_H_
#define FEDSILO_ORCHESTRATOR_ORCHESTRATOR_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/feature_statistics.h"
#include "core/job_config.h"
#include "core/model_state.h"
#include "core/mutex.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "privacy/central_dp.h"
#include "secure/audit_log.h"
#include "secure/secagg.h"
#include "strategy/strategy.h"
#include "tracking/metrics_sink.h"
#include "transport/silo_connection.h"

namespace fedsilo::orchestrator {

// Scores a global model on the orchestrator's held-out test set. Jobs on the
// silos' own data have none: the Orchestrator is given no evaluator and asks
// the silos to score the model on their test rows. Returns
// metric -> value ("loss", "accuracy", ...).
class ModelEvaluator {
 public:
  virtual ~ModelEvaluator() = default;
  virtual StatusOr<std::map<std::string, double>> Evaluate(const ModelState& global) = 0;
};

struct RoundSummary {
  int round = 0;
  int silos_sampled = 0;
  int silos_succeeded = 0;
  std::vector<std::string> failures;             // "silo-3: <reason>"
  std::map<std::string, double> global_metrics;  // from the ModelEvaluator
  double round_seconds = 0;
  double elapsed_seconds = 0;  // since Run() started
  // What the strategy keeps across rounds after this one (Strategy::State();
  // empty for stateless strategies), for checkpoints that resume.
  ModelState strategy_state;
};

// Told about each finished round, with the new global model (to print
// progress, or to make the round durable). An error ends the run.
class RoundObserver {
 public:
  virtual ~RoundObserver() = default;
  virtual Status OnRoundEnd(const RoundSummary& summary, const ModelState& global,
                            int total_rounds) = 0;
};

struct RunResult {
  ModelState final_model;
  int rounds_completed = 0;
  std::map<std::string, double> final_metrics;
};

struct OrchestratorOptions {
  std::string run_id;
  int threads = 1;  // silos trained at the same time
  // When set and true, Run() returns Cancelled before starting another round.
  const std::atomic<bool>* stop = nullptr;
  // When set: every model sent, update received (as digests), silo dropped
  // and aggregate is recorded here.
  secure::AuditLog* audit = nullptr;
  // model.torchscript jobs: the module's bytes, shipped to the silos.
  std::string torchscript{};
  // The federation's CA certificate (PEM): secure-aggregation keys and
  // survivor lists must then be signed by the silos' certificates. Empty in a
  // simulation.
  std::string federation_ca_pem{};
};

class Orchestrator {
 public:
  // `evaluator` and `sink` may be null (the silos evaluate / no metrics);
  // both must outlive the Orchestrator.
  Orchestrator(const JobConfig& job, OrchestratorOptions options,
               std::vector<std::unique_ptr<transport::SiloConnection>> silos,
               std::unique_ptr<strategy::Strategy> strategy, ModelEvaluator* evaluator,
               tracking::MetricsSink* sink);

  // Runs rounds `first_round`..training.rounds from `initial` (the global
  // model after round first_round - 1: resuming gives the same rounds as an
  // uninterrupted run, since sampling and seeds depend only on the round).
  // Fails (with the round and the silos' reasons) when a round ends with fewer
  // than min_silos valid updates; Cancelled when options.stop is raised.
  StatusOr<RunResult> Run(ModelState initial, RoundObserver* observer, int first_round = 1);

  // For jobs on the silos' own tabular data (a data.dataset that is not built
  // in): asks every silo for the sums of its training rows (a "statistics"
  // task), adds them, and makes the total the job's preprocess.statistics,
  // which every later task carries. Recorded as round 0 (global/rows,
  // global/class_<k>_rows, <silo>/rows). Silos that fail are left out with a
  // warning; fails with fewer than min_silos answers, or InvalidArgument
  // naming the silo whose features or label differ from the others'.
  StatusOr<FeatureStatistics> ComputeStatistics();

  // The job as the silos see it (with the statistics once computed).
  const JobConfig& job() const { return job_; }

  // Gives the strategy the state a checkpoint kept (before Run() resumes).
  Status RestoreStrategyState(const ModelState& state) { return strategy_->RestoreState(state); }

  // The silos sampled in `round`, by index, ascending. Deterministic in the
  // job's seed; all silos when federation.fraction is 1.
  std::vector<size_t> SampleSilos(int round) const;

 private:
  StatusOr<RoundSummary> RunRound(int round, ModelState& global);
  // Whether the failed attempt `attempt` (1-based) of `round` is run again:
  // waits, up to federation.wait_for_silos, for the round's silos.
  bool RetryRound(int round, int attempt, const Status& failure);
  // Sends the round's held metrics to the sink (or drops them).
  Status FlushMetrics(bool keep);
  // Checks one silo's reply and folds it in, or records why it was dropped in
  // `summary`; once its update is here, starts the transfer of `following`
  // (the next reply's update, may be null). Returns an error only for
  // failures that end the run.
  Status AcceptUpdate(int round, const std::string& silo, StatusOr<transport::FitReply> reply,
                      const ModelState& global, transport::UpdateSource* following,
                      RoundSummary& summary);
  // With secure aggregation: records the metrics of a silo that trained and
  // adds it to `trained` (its update stays with it), or records its failure.
  Status AcceptTrained(int round, const std::string& silo, StatusOr<transport::FitReply> reply,
                       RoundSummary& summary, std::vector<std::string>& trained);
  // Runs the secure-aggregation stages with the silos in `trained` and folds
  // the unmasked weighted mean into the strategy. Fails the round (nothing is
  // folded) when fewer than the threshold stay.
  Status SecureAggregate(int round, const ModelState& global, int sampled,
                         const std::vector<std::string>& trained, RoundSummary& summary);
  // Sends each silo its request of one stage concurrently and calls `accept`
  // on this thread with each reply; failures are recorded in `summary`.
  using SecureAccept = std::function<Status(const std::string& silo, absl::string_view reply)>;
  Status RunSecureStage(int round, const std::string& stage,
                        const std::map<std::string, std::string>& requests,
                        const SecureAccept& accept, RoundSummary& summary);
  void Audit(absl::string_view event, std::map<std::string, std::string> data) const;
  // `task` for silo number `silo`: its seed depends only on the job's seed,
  // the round and the silo.
  transport::TaskRequest Request(transport::TaskPayload task, int round, size_t silo) const;
  // Sends every silo `task` at once; one reply per silo, in silo order, each
  // with its update fetched (they are small).
  std::vector<StatusOr<transport::FitReply>> AskAll(const transport::TaskPayload& task, int round);
  // Without an evaluator: the global model scored on every silo's test rows
  // (an "evaluate" task); loss and accuracy weighted by the silos' test rows,
  // precision and recall from their summed counts, ROC AUC from their summed
  // score histograms (core/score_histogram.h; the weighted mean of theirs if
  // a silo sent none). Each silo's result is recorded as
  // <silo>/global_test_<metric>.
  StatusOr<std::map<std::string, double>> EvaluateOnSilos(int round, const ModelState& global);
  // `exportable` false: the silo's policy keeps the metric in the federation.
  Status RecordMetric(int round, const std::string& source, const std::string& metric, double value,
                      bool exportable = true);

  JobConfig job_;  // a copy: the statistics step completes its preprocess section
  OrchestratorOptions options_;
  std::vector<std::unique_ptr<transport::SiloConnection>> silos_;
  std::unique_ptr<strategy::Strategy> strategy_;
  // Secure aggregation: the silos' signatures, checked against the federation CA.
  std::shared_ptr<const secure::SignatureChecker> signature_checker_;
  ModelEvaluator* evaluator_;
  std::unique_ptr<privacy::CentralDp> central_dp_;  // privacy.dp.mode central only
  tracking::MetricsSink* sink_;
  // A round's metrics, held until it succeeds (a failed attempt's are dropped).
  Mutex pending_mu_;
  std::vector<tracking::MetricRecord> pending_ ABSL_GUARDED_BY(pending_mu_);
  bool aggregated_ = false;  // this attempt of the round changed the strategy
  ThreadPool pool_;          // last: its workers stop before the members they use go away
};

// Mixes a seed with a round and an index into a new well-spread seed.
uint64_t MixSeed(uint64_t seed, uint64_t round, uint64_t index);

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_ORCHESTRATOR_H_
