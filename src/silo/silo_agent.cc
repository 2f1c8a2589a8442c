#include "silo/silo_agent.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <random>
#include <tuple>
#include <variant>

#include "absl/strings/str_cat.h"
#include "core/control_variates.h"
#include "core/kernels.h"
#include "core/model_state_file.h"
#include "core/score_histogram.h"
#include "privacy/rdp_accountant.h"
#include "secure/audit_log.h"
#include "silo/outgoing.h"
#include "silo/privacy_guard.h"

namespace fedsilo::silo {

std::chrono::seconds ModuleCallDeadline(std::chrono::seconds silo_max, int round_timeout) {
  return std::min(silo_max, std::chrono::seconds(std::max(60, round_timeout)));
}

SiloAgent::SiloAgent(std::string name, ml::SiloData data, BusyClock* busy_clock)
    : name_(std::move(name)), data_(std::move(data)), busy_clock_(busy_clock) {}

namespace {

// The reveals of secure aggregation, in the privacy ledger of a dataset.
class LedgerJournal : public secure::SecAggJournal {
 public:
  LedgerJournal(PrivacyGuard* guard, std::string dataset)
      : guard_(guard), dataset_(std::move(dataset)) {}
  Status Record(const secure::SecAggReveal& reveal) override {
    return guard_->RecordSecAggReveal(dataset_, reveal);
  }

 private:
  PrivacyGuard* guard_;
  std::string dataset_;
};

}  // namespace

void SiloAgent::SetPrivacyGuard(PrivacyGuard* guard, std::string dataset) {
  guard_ = guard;
  guard_dataset_ = std::move(dataset);
  if (guard_ != nullptr)
    secagg_.SetJournal(std::make_shared<LedgerJournal>(guard_, guard_dataset_));
}

StatusOr<transport::FitReply> SiloAgent::RunTask(const transport::TaskRequest& request) {
  StatusOr<transport::FitReply> reply = Perform(request);
  if (!reply.ok()) {
    return Outgoing(
        Annotate(reply.status(), absl::StrCat("silo '", name_, "': round ", request.round)), name_);
  }
  return reply;
}

StatusOr<std::string> SiloAgent::SecureStep(const transport::SecureStepRequest& request) {
  StatusOr<std::string> reply = secagg_.Handle(request.run_id, request.round, request.payload);
  if (!reply.ok()) {
    // Not shareable: some are about the update itself (a value that is not
    // finite, and where), which the protocol is there to hide.
    return Outgoing(
        Annotate(reply.status(), absl::StrCat("silo '", name_, "': round ", request.round)), name_);
  }
  return reply;
}

Status SiloAgent::LoadControl(const std::string& run_id, const ModelState& model) {
  if (control_.CheckSameLayout(model).ok() && control_run_ == run_id) return absl::OkStatus();
  control_run_ = run_id;
  std::error_code ec;
  if (!control_path_.empty() && std::filesystem::exists(control_path_, ec)) {
    FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ReadModelStateFile(control_path_));
    FEDSILO_RETURN_IF_ERROR(Annotate(file.state.CheckSameLayout(model),
                                     absl::StrCat(control_path_, " does not fit the job's model")));
    control_ = std::move(file.state);
  } else {
    control_ = model.ZerosLike();
  }
  return absl::OkStatus();
}

const DatasetPolicy& SiloAgent::Rules() const { return RulesFor(guard_, guard_dataset_); }

Status SiloAgent::Admit(const transport::TaskRequest& request) {
  const JobConfig& job = *request.job;
  const bool local_dp = job.privacy.dp.mode == DpMode::kLocal;
  if (guard_ != nullptr) {
    // Every task, before the model is built or a row is touched.
    FEDSILO_RETURN_IF_ERROR(guard_->CheckJob(guard_dataset_, request.run_id, job));
  }
  if (admitted_run_ != request.run_id) {
    // A run's first task here: its plan over the whole job, fixed now.
    std::optional<DpPlan> plan;
    if (local_dp) {
      FEDSILO_ASSIGN_OR_RETURN(plan, PlanDp(job, data_.train.size()));
    }
    if (guard_ != nullptr) {
      FEDSILO_ASSIGN_OR_RETURN(LedgerEntry entry, guard_->Admit(guard_dataset_, request.run_id, job,
                                                                plan ? &*plan : nullptr));
      if (plan) {
        // A run the ledger knows keeps the noise it was admitted with.
        plan->noise_multiplier = entry.noise_multiplier;
        plan->sample_rate = entry.sample_rate;
      }
    }
    dp_ = plan;
    dp_steps_ = 0;
    admitted_run_ = request.run_id;
  }
  if (guard_ != nullptr && !job.preprocess.statistics.empty()) {
    FEDSILO_RETURN_IF_ERROR(
        guard_->PinStatistics(guard_dataset_, request.run_id, StatisticsDigest(job)));
  }
  return absl::OkStatus();
}

StatusOr<transport::FitReply> SiloAgent::Evaluate(const transport::TaskRequest& request,
                                                  const ModelState& global) {
  // The global model as it is, on this silo's test rows.
  if (guard_ != nullptr) {
    FEDSILO_RETURN_IF_ERROR(guard_->CountEvaluation(guard_dataset_, request.run_id, *request.job));
  }
  FEDSILO_RETURN_IF_ERROR(Shareable(model_->SetState(global)));
  BusyClock::Scope busy(busy_clock_);
  if (data_.test.size() == 0)
    return Shareable(absl::FailedPreconditionError("no test rows to score on"));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> logp, model_->PredictLogProbabilities(data_.test));
  const ml::ClassificationMetrics m =
      ml::MetricsOfPredictions(logp, data_.test.dataset->num_classes, data_.test);
  transport::EvaluateAnswer answer;
  answer.examples = m.examples;
  answer.loss = m.loss;
  answer.accuracy = m.accuracy;
  if (m.binary) {
    // Counts and a histogram of the scores, not the scores: the federation
    // adds them up into pooled precision, recall and ROC AUC.
    transport::BinaryEvaluation& b = answer.binary.emplace();
    b.precision = m.precision;
    b.recall = m.recall;
    b.auc = m.auc;
    b.true_positives = m.true_positives;
    b.false_positives = m.false_positives;
    b.false_negatives = m.false_negatives;
    ScoreHistogram& histogram = b.scores.emplace();
    for (int64_t i = 0; i < data_.test.size(); ++i) {
      const int64_t label = data_.test.dataset->labels[static_cast<size_t>(data_.test.indices[i])];
      histogram.Add(logp[2 * i + 1] - logp[2 * i], label == 1);
    }
  }
  answer.metrics_private = !Rules().export_metrics;
  return transport::Encode(answer);
}

StatusOr<transport::FitReply> SiloAgent::Perform(const transport::TaskRequest& request) {
  const ModelState* global = transport::ModelOf(request.task);
  if (request.job == nullptr || global == nullptr) {
    // Statistics are the silo runtime's (silo_runtime.h), before any agent.
    return Shareable(absl::InvalidArgumentError(
        absl::StrCat("a ", transport::TaskKindName(transport::KindOf(request.task)),
                     " task with no job or no model is not one this silo's agent answers")));
  }
  FEDSILO_RETURN_IF_ERROR(Admit(request));
  if (model_ == nullptr) FEDSILO_RETURN_IF_ERROR(BuildModel(*request.job, request.seed));
  if (std::holds_alternative<transport::EvaluateTask>(request.task)) {
    return Evaluate(request, *global);
  }
  return Train(request, *global);
}

Status SiloAgent::BuildModel(const JobConfig& job, uint64_t seed) {
  ml::ModelSpec spec{job.model, data_.train.dataset->example_shape,
                     data_.train.dataset->num_classes};
  if (!module_path_.empty()) spec.config.torchscript = module_path_;
  // The model against the data's shapes (a module runs on zeros only here).
  std::optional<ml::Sandbox> sandbox;
  if (sandbox_ != nullptr) {
    sandbox = *sandbox_;
    sandbox->timeout = ModuleCallDeadline(sandbox_->timeout, job.federation.round_timeout);
  }
  StatusOr<std::unique_ptr<ml::Model>> model =
      ml::Model::Create(spec, seed, sandbox ? &*sandbox : nullptr);
  // A built-in model's errors are ours (the spec against the data's shapes);
  // a module's come from its sandbox and stay here (its op check's refusal is
  // shareable already).
  if (!model.ok() && spec.config.kind != ModelKind::kTorchScript) return Shareable(model.status());
  if (!model.ok()) return model.status();
  model_ = std::move(model).value();
  return absl::OkStatus();
}

StatusOr<transport::FitReply> SiloAgent::Train(const transport::TaskRequest& request,
                                               const ModelState& sent) {
  const JobConfig& job = *request.job;
  // SCAFFOLD: the server control variate c comes with the global model.
  const bool scaffold = TraitsOf(job.strategy).control_variates;
  ModelState scaffold_model, server_control;
  const ModelState* global = &sent;
  if (scaffold) {
    std::tie(scaffold_model, server_control) = SplitControl(sent);
    FEDSILO_RETURN_IF_ERROR(Shareable(
        Annotate(server_control.CheckSameLayout(scaffold_model), "scaffold: the control variate")));
    global = &scaffold_model;
    FEDSILO_RETURN_IF_ERROR(LoadControl(request.run_id, scaffold_model));
  }
  FEDSILO_RETURN_IF_ERROR(Shareable(model_->SetState(*global)));

  TrainingConfig training = job.training;
  training.learning_rate = RoundLearningRate(job.training, request.round);
  transport::FitReply reply;
  FEDSILO_ASSIGN_OR_RETURN(
      const int64_t steps,
      TrainLocally(request, training, scaffold ? &server_control : nullptr, reply));
  reply.update = model_->GetState();
  for (size_t t = 0; t < reply.update.size(); ++t) {
    absl::Span<float> local = reply.update.mutable_tensors()[t].floats();
    kernels::Subtract(local, global->tensors()[t].floats(), local);
  }
  if (scaffold) {
    FEDSILO_ASSIGN_OR_RETURN(ModelState delta_c, StepControl(request.round, training, steps,
                                                             server_control, reply.update));
    FEDSILO_RETURN_IF_ERROR(AppendControl(reply.update, delta_c));
  }
  if (job.privacy.secure_aggregation.enabled) {
    // Kept for masking; only the masked sum of the silos is ever sent.
    // The record of reveals (in the ledger) keys on the model trained from,
    // and no sum may be over fewer silos than the policy or the job say.
    secagg_.set_min_silos(std::max(Rules().min_silos, job.federation.min_silos));
    secagg_.SetInput(request.run_id, request.round, std::move(reply.update), reply.num_examples,
                     secure::ModelDigest(*global));
    reply.update = ModelState();
    reply.num_examples = 0;
  }
  return reply;
}

StatusOr<int64_t> SiloAgent::TrainLocally(const transport::TaskRequest& request,
                                          const TrainingConfig& training,
                                          const ModelState* server_control,
                                          transport::FitReply& reply) {
  const JobConfig& job = *request.job;
  std::optional<ml::DpSgdOptions> dp;
  double epsilon = 0;
  if (dp_) {
    // The round's steps are in the ledger before it trains: a crash never
    // loses spending, and steps past the plan or the budget are refused.
    if (guard_ != nullptr) {
      FEDSILO_ASSIGN_OR_RETURN(LedgerEntry charged, guard_->Charge(guard_dataset_, request.run_id,
                                                                   dp_->steps_per_round));
      epsilon = charged.epsilon;
    } else {
      dp_steps_ += dp_->steps_per_round;
      FEDSILO_ASSIGN_OR_RETURN(privacy::PrivacySpent spent,
                               privacy::ComputeEpsilon(dp_->sample_rate, dp_->noise_multiplier,
                                                       dp_steps_, job.privacy.dp.delta));
      epsilon = spent.epsilon;
    }
    // Sampling and noise from a CSPRNG keyed by this machine's operating
    // system: secret from the orchestrator, unlike request.seed.
    dp = ml::DpSgdOptions{dp_->noise_multiplier, job.privacy.dp.max_grad_norm, nullptr};
  }
  BusyClock::Scope busy(busy_clock_);
  ml::LocalObjective objective;
  if (TraitsOf(job.strategy).proximal) objective.proximal_mu = job.strategy.proximal_mu;
  ModelState correction;  // SCAFFOLD: c - c_i
  if (server_control != nullptr) {
    correction = *server_control;
    for (size_t t = 0; t < correction.size(); ++t) {
      absl::Span<float> c = correction.mutable_tensors()[t].floats();
      kernels::Subtract(c, control_.tensors()[t].floats(), c);
    }
    objective.gradient_correction = &correction;
  }
  FEDSILO_ASSIGN_OR_RETURN(ml::TrainStats stats, model_->Train(data_.train, training, request.seed,
                                                               dp ? &*dp : nullptr, objective));
  reply.num_examples = stats.examples;
  if (dp) {
    if (stats.steps != dp_->steps_per_round) {
      return Shareable(absl::InternalError(absl::StrCat("DP-SGD took ", stats.steps, " steps, ",
                                                        dp_->steps_per_round, " were charged")));
    }
    reply.metrics["epsilon"] = epsilon;
    reply.metrics["dp_noise_multiplier"] = dp->noise_multiplier;
  }
  reply.metrics_private = !Rules().export_metrics;
  if (Rules().SharesTrainMetrics(job)) {
    // Measured on the silo's rows without noise: the policy decides (under
    // local DP they are not sent unless it says share_train_metrics).
    reply.metrics["train_loss"] = stats.loss;
    reply.metrics["train_accuracy"] = stats.accuracy;
    if (data_.test.size() > 0) {
      FEDSILO_ASSIGN_OR_RETURN(ml::ClassificationMetrics test, model_->Evaluate(data_.test));
      for (const auto& [metric, value] : test.ToMap()) reply.metrics["test_" + metric] = value;
    }
  }
  return stats.steps;
}

StatusOr<ModelState> SiloAgent::StepControl(int round, const TrainingConfig& training,
                                            int64_t steps, const ModelState& server_control,
                                            const ModelState& update) {
  // Option II of the paper: c_i+ = c_i - c + (x - y_i) / (K lr), and the
  // orchestrator gets Δc_i = c_i+ - c_i = -c - update / (K lr). With SGD
  // momentum m a step goes lr / (1 - m) in the long run: that is the lr here.
  const double step = training.learning_rate / (1.0 - training.momentum);
  const float inverse =
      static_cast<float>(-1.0 / (static_cast<double>(std::max<int64_t>(steps, 1)) * step));
  if (!std::isfinite(inverse)) {
    // A learning rate decayed to (nearly) nothing; the variates would be
    // poisoned for every later round.
    return absl::FailedPreconditionError(
        absl::StrCat("round ", round, "'s learning rate ", training.learning_rate,
                     " is too small for SCAFFOLD's control variates"));
  }
  ModelState delta_c = server_control;
  for (size_t t = 0; t < delta_c.size(); ++t) {
    absl::Span<float> d = delta_c.mutable_tensors()[t].floats();
    kernels::Scale(-1.0f, d);
    kernels::Axpy(inverse, update.tensors()[t].floats(), d);
    kernels::Axpy(1.0f, d, control_.mutable_tensors()[t].floats());
  }
  if (!control_path_.empty()) FEDSILO_RETURN_IF_ERROR(WriteModelStateFile(control_path_, control_));
  return delta_c;
}

}  // namespace fedsilo::silo
