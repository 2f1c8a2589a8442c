// MlflowExporter: sends one run to an MLflow tracking server as it happens,
// without ever holding training up or failing it. Calls go out from a thread
// of its own, in order: the run (created, or continued after a restart), the
// job's parameters, the metrics (step = round, batched), artifacts, and the
// run's end. A call that fails for want of the server (no connection, 5xx,
// 429) is tried again with exponential backoff; one the server refuses is
// logged and dropped. Metrics a silo's policy keeps private are never sent.
//
// Thread safety: Record() and AddArtifact() may be called from any thread;
// Finish() once.
#ifndef FEDSILO_TRACKING_MLFLOW_EXPORTER_H_
#define FEDSILO_TRACKING_MLFLOW_EXPORTER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "core/status.h"
#include "tracking/metrics_sink.h"
#include "tracking/mlflow_client.h"

namespace fedsilo::tracking {

struct MlflowExportOptions {
  std::string uri;         // the tracking server
  std::string experiment;  // MLflow experiment name (created when missing)
  std::string run_name;
  std::map<std::string, std::string> tags;
  MlflowParams params;
  // Continue this MLflow run instead of creating one (a resumed job).
  std::string resume_run_id;
  // Called on the exporter's thread once the MLflow run exists.
  std::function<void(const std::string& mlflow_run_id)> on_run_created;
  std::chrono::milliseconds first_retry{500};
  std::chrono::milliseconds max_retry{30000};
  // How long metrics wait to be batched with the ones that follow.
  std::chrono::milliseconds batch_delay{100};
};

struct MlflowExportReport {
  std::string run_id;  // MLflow's; empty when no run was made
  int64_t metrics_sent = 0;
  int64_t metrics_private = 0;  // kept back by silo policies
  int64_t metrics_unsent = 0;   // still waiting when Finish() gave up
  int calls_unsent = 0;         // other calls not made (run, parameters, artifacts, end)
  std::vector<std::string> errors;  // calls the server refused
  bool complete() const { return metrics_unsent == 0 && calls_unsent == 0 && errors.empty(); }
};

class MlflowExporter final : public MetricsSink {
 public:
  // InvalidArgument for a malformed uri; nothing is sent on the caller's thread.
  static StatusOr<std::unique_ptr<MlflowExporter>> Start(MlflowExportOptions options);
  // Gives up on whatever is unsent when Finish() was not called.
  ~MlflowExporter() override;

  // Queues the metric; always OK (a tracker never fails training).
  Status Record(const MetricRecord& record) override;
  // Queues `bytes` as the run's artifact `path` ("model/final_model.fsm").
  void AddArtifact(std::string path, std::string bytes);
  // Ends the MLflow run with `status` (FINISHED, FAILED or KILLED; empty
  // leaves it RUNNING, to be continued) and waits at most `wait` for the
  // backlog to go out. Logs and returns what was sent and what was not.
  MlflowExportReport Finish(const std::string& status, std::chrono::milliseconds wait);

 private:
  enum class OpKind { kCreateRun, kParams, kMetrics, kArtifact, kEnd };
  struct Op {
    explicit Op(OpKind k) : kind(k) {}
    OpKind kind;
    std::vector<MlflowMetric> metrics;
    MlflowParams params;
    std::string path, bytes;  // kArtifact
    std::string status;       // kEnd
    int64_t end_ms = 0;
  };

  MlflowExporter(MlflowExportOptions options, std::unique_ptr<MlflowClient> client);
  void Work();
  Status Execute(const Op& op);

  const MlflowExportOptions options_;
  std::unique_ptr<MlflowClient> client_;
  MlflowRun run_;  // written by the worker only, before any other call

  Mutex mu_;
  CondVar wake_;  // work queued, or give up
  CondVar idle_;  // the queue ran dry
  std::deque<Op> ops_ ABSL_GUARDED_BY(mu_);
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool give_up_ ABSL_GUARDED_BY(mu_) = false;
  bool disabled_ ABSL_GUARDED_BY(mu_) = false;  // the run could not be made
  MlflowExportReport report_ ABSL_GUARDED_BY(mu_);
  std::thread worker_;
};

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_MLFLOW_EXPORTER_H_
