#include "silo/silo_agent.h"

#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/kernels.h"
#include "privacy/rdp_accountant.h"
#include "silo/privacy_guard.h"

namespace fedsilo::silo {

SiloAgent::SiloAgent(std::string name, ml::SiloData data, BusyClock* busy_clock)
    : name_(std::move(name)), data_(std::move(data)), busy_clock_(busy_clock) {}

StatusOr<transport::FitReply> SiloAgent::Fit(const transport::FitRequest& request) {
  StatusOr<transport::FitReply> reply = FitImpl(request);
  if (!reply.ok()) {
    return Annotate(reply.status(), absl::StrCat("silo '", name_, "': round ", request.round));
  }
  return reply;
}

StatusOr<std::string> SiloAgent::SecureStep(const transport::SecureStepRequest& request) {
  StatusOr<std::string> reply = secagg_.Handle(request.run_id, request.round, request.payload);
  if (!reply.ok()) {
    return Annotate(reply.status(), absl::StrCat("silo '", name_, "': round ", request.round));
  }
  return reply;
}

StatusOr<double> SiloAgent::DpNoiseMultiplier(const JobConfig& job) {
  if (dp_noise_multiplier_ > 0) return dp_noise_multiplier_;
  const DpConfig& dp = job.privacy.dp;
  if (dp.noise_multiplier > 0) {
    dp_noise_multiplier_ = dp.noise_multiplier;
    return dp_noise_multiplier_;
  }
  StatusOr<double> sigma =
      privacy::ComputeNoiseMultiplier(dp.target_epsilon, DpRate(job), DpJobSteps(job), dp.delta);
  if (!sigma.ok()) return Annotate(sigma.status(), "privacy.dp.target_epsilon");
  dp_noise_multiplier_ = *sigma;
  return dp_noise_multiplier_;
}

double SiloAgent::DpRate(const JobConfig& job) const {
  return ml::DpSampleRate(data_.train.size(), job.training.batch_size);
}

int64_t SiloAgent::DpJobSteps(const JobConfig& job) const {
  return static_cast<int64_t>(job.training.rounds) * job.training.local_epochs *
         ml::DpStepsPerEpoch(data_.train.size(), job.training.batch_size);
}

StatusOr<transport::FitReply> SiloAgent::FitImpl(const transport::FitRequest& request) {
  if (request.job == nullptr || request.global == nullptr) {
    return absl::InvalidArgumentError("request carries no job or no model");
  }
  const JobConfig& job = *request.job;
  if (model_ == nullptr) {
    ml::ModelSpec spec{job.model, data_.train.dataset->example_shape,
                       data_.train.dataset->num_classes};
    FEDSILO_ASSIGN_OR_RETURN(model_, ml::Model::Create(spec, request.seed));
  }
  FEDSILO_RETURN_IF_ERROR(model_->SetState(*request.global));

  const bool local_dp = job.privacy.dp.mode == DpMode::kLocal;
  const double q = DpRate(job);
  if (guard_ != nullptr && !admitted_) {
    // What the whole job would spend, decided before any training.
    double planned = HUGE_VAL;
    if (local_dp) {
      FEDSILO_ASSIGN_OR_RETURN(double sigma, DpNoiseMultiplier(job));
      FEDSILO_ASSIGN_OR_RETURN(
          privacy::PrivacySpent p,
          privacy::ComputeEpsilon(q, sigma, DpJobSteps(job), job.privacy.dp.delta));
      planned = p.epsilon;
    }
    FEDSILO_RETURN_IF_ERROR(guard_->Admit(guard_dataset_, request.run_id, job, planned));
    admitted_ = true;
    if (!local_dp) {
      FEDSILO_RETURN_IF_ERROR(guard_->Record(guard_dataset_, request.run_id, HUGE_VAL, 0));
    }
  }

  transport::FitReply reply;
  {
    BusyClock::Scope busy(busy_clock_);
    std::optional<ml::DpSgdOptions> dp;
    if (job.privacy.dp.mode == DpMode::kLocal) {
      FEDSILO_ASSIGN_OR_RETURN(double sigma, DpNoiseMultiplier(job));
      std::random_device os_random;  // secret from the orchestrator, unlike request.seed
      const uint64_t secret = (static_cast<uint64_t>(os_random()) << 32) ^ os_random();
      dp = ml::DpSgdOptions{sigma, job.privacy.dp.max_grad_norm, secret};
    }
    FEDSILO_ASSIGN_OR_RETURN(
        ml::TrainStats stats,
        model_->Train(data_.train, job.training, request.seed, dp ? &*dp : nullptr,
                      job.strategy.name == "fedprox" ? job.strategy.proximal_mu : 0.0));
    reply.num_examples = stats.examples;
    if (dp) {
      dp_steps_ += stats.steps;
      FEDSILO_ASSIGN_OR_RETURN(
          privacy::PrivacySpent spent,
          privacy::ComputeEpsilon(q, dp->noise_multiplier, dp_steps_, job.privacy.dp.delta));
      reply.metrics["epsilon"] = spent.epsilon;
      reply.metrics["dp_noise_multiplier"] = dp->noise_multiplier;
      if (guard_ != nullptr) {
        FEDSILO_RETURN_IF_ERROR(
            guard_->Record(guard_dataset_, request.run_id, spent.epsilon, job.privacy.dp.delta));
      }
    }
    reply.metrics["train_loss"] = stats.loss;
    reply.metrics["train_accuracy"] = stats.accuracy;
    if (data_.test.size() > 0) {
      FEDSILO_ASSIGN_OR_RETURN(ml::ClassificationMetrics test, model_->Evaluate(data_.test));
      for (const auto& [metric, value] : test.ToMap()) reply.metrics["test_" + metric] = value;
    }
  }
  reply.update = model_->GetState();
  const ModelState& global = *request.global;
  for (size_t t = 0; t < reply.update.size(); ++t) {
    absl::Span<float> local = reply.update.mutable_tensors()[t].floats();
    kernels::Subtract(local, global.tensors()[t].floats(), local);
  }
  if (job.privacy.secure_aggregation.enabled) {
    // Kept for masking; only the masked sum of the silos is ever sent.
    secagg_.SetInput(request.run_id, request.round, std::move(reply.update), reply.num_examples);
    reply.update = ModelState();
    reply.num_examples = 0;
  }
  return reply;
}

}  // namespace fedsilo::silo
