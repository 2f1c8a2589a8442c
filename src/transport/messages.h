// What the orchestrator and a silo say to each other in one round, independent
// of how it travels (in-process call now; gRPC messages mirror these).
#ifndef FEDSILO_TRANSPORT_MESSAGES_H_
#define FEDSILO_TRANSPORT_MESSAGES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "core/feature_statistics.h"
#include "core/job_config.h"
#include "core/model_state.h"
#include "core/score_histogram.h"
#include "core/status.h"

namespace fedsilo::transport {

// What a task asks of a silo: one of three, each carrying what it needs.
// Train from `global`; reply with the update and metrics.
struct FitTask {
  const ModelState* global = nullptr;  // outlives the call
};
// No training and no model: reply with a StatisticsAnswer (below).
struct StatisticsTask {};
// No training: score `global` on the silo's test rows; reply with an
// EvaluateAnswer (below).
struct EvaluateTask {
  const ModelState* global = nullptr;  // outlives the call
};
using TaskPayload = std::variant<FitTask, StatisticsTask, EvaluateTask>;

// The payload's name, for logs, audit records and the wire's task kind.
enum class TaskKind { kFit, kStatistics, kEvaluate };
TaskKind KindOf(const TaskPayload& task);
absl::string_view TaskKindName(TaskKind kind);
// The model a fit or evaluate task starts from; null for statistics (and for
// a fit or evaluate task built without one, which silos refuse).
const ModelState* ModelOf(const TaskPayload& task);
// InvalidArgument ("a fit task carries no model") unless a fit or evaluate
// task carries its model: what both ends check before a task goes further.
Status CheckCarriesItsModel(const TaskPayload& task);

// Orchestrator -> silo: one task of a job's round.
struct TaskRequest {
  std::string run_id;
  int round = 0;                   // 1-based; 0 for the statistics before round 1
  uint64_t seed = 0;               // the silo derives its shuffling from it
  const JobConfig* job = nullptr;  // model and training settings; outlives the call
  // model.torchscript jobs: the module file's bytes (the job names it by
  // digest, "sha256:<hex>"). Null otherwise; outlives the call.
  const std::string* torchscript = nullptr;
  TaskPayload task;
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

// The typed answers of the tasks that are not training. Through
// SiloConnection and on the wire they travel as a FitReply (its counts,
// metrics and update bytes); Encode() and Decode() below are the one place
// that knows how, so neither side reads the other's metrics by name.

// A statistics task's answer: the sums of the silo's training rows.
struct StatisticsAnswer {
  FeatureSums sums;
  bool metrics_private = false;  // the silo's policy keeps its row count inside
};

// A two-class evaluation: precision, recall and ROC AUC, and the counts and
// the scores' histogram the federation adds up into its own (not the scores).
struct BinaryEvaluation {
  double precision = 0, recall = 0, auc = 0;
  int64_t true_positives = 0, false_positives = 0, false_negatives = 0;
  std::optional<ScoreHistogram> scores;  // absent: the federation averages AUCs
};

// An evaluate task's answer: the global model scored on the silo's test rows.
struct EvaluateAnswer {
  int64_t examples = 0;  // test rows
  double loss = 0;
  double accuracy = 0;
  std::optional<BinaryEvaluation> binary;  // two classes only
  bool metrics_private = false;
};

FitReply Encode(const StatisticsAnswer& answer);
FitReply Encode(const EvaluateAnswer& answer);
// InvalidArgument when the reply is not such an answer: no sums (naming
// `silo`); no test rows, a loss or accuracy that is not a number, or two
// classes' scores without the counts behind them.
StatusOr<StatisticsAnswer> DecodeStatisticsAnswer(const FitReply& reply, absl::string_view silo);
StatusOr<EvaluateAnswer> DecodeEvaluateAnswer(const FitReply& reply, absl::string_view silo);

// Orchestrator -> silo: one stage of secure aggregation. The payload is a
// secagg.proto Request, opaque to the transport; so is the reply.
struct SecureStepRequest {
  std::string run_id;
  int round = 0;
  std::string payload;
};

// Orchestrator -> silo: one step of a vertical job (transport/vertical_party.h).
// The payload is a vertical.proto Request, opaque to the transport; so is
// the reply, of at most `max_reply_bytes`.
struct VerticalStepRequest {
  std::string run_id;
  // The step that opens the run carries its job (outlives the call); the
  // transport sends it in the job schema the silo reads.
  const JobConfig* job = nullptr;
  std::string payload;
  uint64_t max_reply_bytes = 0;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_MESSAGES_H_
