#include "silo/silo_agent.h"

#include "absl/strings/str_cat.h"
#include "core/kernels.h"

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

  transport::FitReply reply;
  {
    BusyClock::Scope busy(busy_clock_);
    FEDSILO_ASSIGN_OR_RETURN(ml::TrainStats stats,
                             model_->Train(data_.train, job.training, request.seed));
    reply.num_examples = stats.examples;
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
  return reply;
}

}  // namespace fedsilo::silo
