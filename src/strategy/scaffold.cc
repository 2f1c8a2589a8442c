#include "strategy/scaffold.h"

#include "absl/strings/str_cat.h"
#include "core/control_variates.h"
#include "core/kernels.h"

namespace fedsilo::strategy {

Scaffold::Scaffold(const StrategyConfig& config, int total_silos)
    : total_silos_(total_silos), mean_(config.server_learning_rate) {}

ModelState Scaffold::Broadcast(const ModelState& global) const {
  ModelState sent = global;
  const ModelState zeros =
      control_.CheckSameLayout(global).ok() ? ModelState() : global.ZerosLike();
  AppendControl(sent, zeros.empty() ? control_ : zeros).IgnoreError();
  return sent;
}

Status Scaffold::BeginRound(const ModelState& global) {
  FEDSILO_RETURN_IF_ERROR(mean_.BeginRound(global));
  if (!control_.CheckSameLayout(global).ok()) control_ = global.ZerosLike();
  control_sum_ = global.ZerosLike();
  return absl::OkStatus();
}

Status Scaffold::Accumulate(ModelState update, double weight) {
  auto [model, delta_c] = SplitControl(std::move(update));
  FEDSILO_RETURN_IF_ERROR(
      Annotate(delta_c.CheckSameLayout(control_sum_), "scaffold: the update's control variate"));
  for (size_t t = 0; t < delta_c.size(); ++t) {
    kernels::Axpy(1.0f, delta_c.tensors()[t].floats(), control_sum_.mutable_tensors()[t].floats());
  }
  return mean_.Accumulate(std::move(model), weight);
}

StatusOr<ModelState> Scaffold::Finish() {
  FEDSILO_ASSIGN_OR_RETURN(ModelState next, mean_.Finish());
  const float share = 1.0f / static_cast<float>(total_silos_);
  for (size_t t = 0; t < control_.size(); ++t) {
    kernels::Axpy(share, control_sum_.tensors()[t].floats(),
                  control_.mutable_tensors()[t].floats());
  }
  return next;
}

Status Scaffold::RestoreState(const ModelState& state) {
  control_ = state;
  return absl::OkStatus();
}

}  // namespace fedsilo::strategy
