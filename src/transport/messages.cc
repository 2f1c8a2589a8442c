#include "transport/messages.h"

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"

namespace fedsilo::transport {

TaskKind KindOf(const TaskPayload& task) {
  if (std::holds_alternative<StatisticsTask>(task)) return TaskKind::kStatistics;
  if (std::holds_alternative<EvaluateTask>(task)) return TaskKind::kEvaluate;
  return TaskKind::kFit;
}

const ModelState* ModelOf(const TaskPayload& task) {
  if (const FitTask* fit = std::get_if<FitTask>(&task)) return fit->global;
  if (const EvaluateTask* evaluate = std::get_if<EvaluateTask>(&task)) return evaluate->global;
  return nullptr;
}

Status CheckCarriesItsModel(const TaskPayload& task) {
  if (ModelOf(task) == nullptr && KindOf(task) != TaskKind::kStatistics) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", TaskKindName(KindOf(task)), " task carries no model"));
  }
  return absl::OkStatus();
}

absl::string_view TaskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kFit:
      return "fit";
    case TaskKind::kStatistics:
      return "statistics";
    case TaskKind::kEvaluate:
      return "evaluate";
  }
  return "?";
}

FitReply Encode(const StatisticsAnswer& answer) {
  FitReply reply;
  reply.num_examples = answer.sums.rows();
  reply.update = answer.sums.ToState();
  reply.metrics["rows"] = static_cast<double>(reply.num_examples);
  reply.metrics_private = answer.metrics_private;
  return reply;
}

FitReply Encode(const EvaluateAnswer& answer) {
  FitReply reply;
  reply.num_examples = answer.examples;
  reply.metrics = {{"loss", answer.loss}, {"accuracy", answer.accuracy}};
  if (answer.binary.has_value()) {
    const BinaryEvaluation& b = *answer.binary;
    reply.metrics["precision"] = b.precision;
    reply.metrics["recall"] = b.recall;
    reply.metrics["auc"] = b.auc;
    reply.metrics["true_positives"] = static_cast<double>(b.true_positives);
    reply.metrics["false_positives"] = static_cast<double>(b.false_positives);
    reply.metrics["false_negatives"] = static_cast<double>(b.false_negatives);
    if (b.scores.has_value()) reply.update = b.scores->ToState();
  }
  reply.metrics_private = answer.metrics_private;
  return reply;
}

StatusOr<StatisticsAnswer> DecodeStatisticsAnswer(const FitReply& reply, absl::string_view silo) {
  StatisticsAnswer answer;
  FEDSILO_ASSIGN_OR_RETURN(answer.sums,
                           FeatureSums::FromState(reply.update, absl::StrCat("silo '", silo, "'")));
  answer.metrics_private = reply.metrics_private;
  return answer;
}

StatusOr<EvaluateAnswer> DecodeEvaluateAnswer(const FitReply& reply, absl::string_view silo) {
  const auto metric = [&](const char* name) -> std::optional<double> {
    auto it = reply.metrics.find(name);
    if (it == reply.metrics.end() || !std::isfinite(it->second)) return std::nullopt;
    return it->second;
  };
  // A count a silo may send: whole, not negative, and within what a double
  // holds exactly.
  const auto count = [&](const char* name) -> std::optional<int64_t> {
    const std::optional<double> v = metric(name);
    if (!v.has_value() || *v < 0 || *v > 9007199254740992.0 || std::floor(*v) != *v) {
      return std::nullopt;
    }
    return static_cast<int64_t>(*v);
  };
  if (reply.num_examples <= 0 || !metric("loss") || !metric("accuracy")) {
    return absl::InvalidArgumentError("its evaluation has no test rows, loss or accuracy");
  }
  EvaluateAnswer answer;
  answer.examples = reply.num_examples;
  answer.loss = *metric("loss");
  answer.accuracy = *metric("accuracy");
  answer.metrics_private = reply.metrics_private;
  if (metric("auc")) {
    const std::optional<int64_t> tp = count("true_positives"), fp = count("false_positives"),
                                 fn = count("false_negatives");
    if (!tp || !fp || !fn || !metric("precision") || !metric("recall")) {
      return absl::InvalidArgumentError(
          "its two-class evaluation lacks precision, recall or the counts behind them");
    }
    BinaryEvaluation b;
    b.precision = *metric("precision");
    b.recall = *metric("recall");
    b.auc = *metric("auc");
    b.true_positives = *tp;
    b.false_positives = *fp;
    b.false_negatives = *fn;
    StatusOr<ScoreHistogram> scores =
        ScoreHistogram::FromState(reply.update, absl::StrCat("silo '", silo, "'"));
    if (scores.ok()) b.scores = *std::move(scores);
    answer.binary = std::move(b);
  }
  return answer;
}

}  // namespace fedsilo::transport
