// What the orchestrator and a silo say to each other in one round, independent
// of how it travels (in-process call now; gRPC messages mirror these).
#ifndef FEDSILO_TRANSPORT_MESSAGES_H_
#define FEDSILO_TRANSPORT_MESSAGES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo::transport {

// What a task asks of a silo.
enum class TaskKind {
  kFit,         // train from `global`; reply with the update and metrics
  kStatistics,  // no training: reply with the FeatureSums of the silo's
                // training rows (core/feature_statistics.h) as `update`
  kEvaluate,    // no training: score `global` on the silo's test rows; reply
                // with metrics (and the test rows as num_examples) only
};
absl::string_view TaskKindName(TaskKind kind);

// Orchestrator -> silo: train on your data starting from `global` (or the
// other tasks above).
struct FitRequest {
  std::string run_id;
  int round = 0;                       // 1-based
  uint64_t seed = 0;                   // the silo derives its shuffling from it
  const JobConfig* job = nullptr;      // model and training settings; outlives the call
  const ModelState* global = nullptr;  // outlives the call
  // model.torchscript jobs: the module file's bytes (the job names it by
  // digest, "sha256:<hex>"). Null otherwise; outlives the call.
  const std::string* torchscript = nullptr;
  TaskKind task = TaskKind::kFit;
};

// Silo -> orchestrator: the update and what the silo measured.
// An update that stays with a remote silo until the orchestrator asks for it,
// so that only the update being folded is in transit: memory O(model), not
// O(model x silos). Dropping it without fetching releases the silo.
class UpdateSource {
 public:
  virtual ~UpdateSource() = default;
  // Starts the transfer without waiting for it, so that it overlaps the
  // folding of the update before it. Optional; Fetch() starts it otherwise.
  virtual void Prefetch() {}
  // Fetches the update; call at most once. Errors name the silo.
  virtual StatusOr<ModelState> Fetch() = 0;
};

struct FitReply {
  ModelState update;  // local model minus the global model (empty while `source` is set)
  // Set by remote transports: the update is fetched from here when needed.
  std::shared_ptr<UpdateSource> source;
  int64_t num_examples = 0;  // training examples used; the aggregation weight
  // "train_loss", "train_accuracy", "test_loss", "test_accuracy", and for
  // binary tasks "test_precision", "test_recall", "test_auc".
  std::map<std::string, double> metrics;
  // The silo's policy keeps its metrics inside the federation: they are
  // recorded in the run store but never exported (tracking.mlflow).
  bool metrics_private = false;
};

// Orchestrator -> silo: one stage of secure aggregation. The payload is a
// secagg.proto Request, opaque to the transport; so is the reply.
struct SecureStepRequest {
  std::string run_id;
  int round = 0;
  std::string payload;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_MESSAGES_H_
