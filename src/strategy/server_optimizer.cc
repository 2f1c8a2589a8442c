#include "strategy/server_optimizer.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fedsilo::strategy {

ServerOptimizer::ServerOptimizer(Kind kind, const StrategyConfig& config)
    : kind_(kind), config_(config) {}

Status ServerOptimizer::BeginRound(const ModelState& global) {
  FEDSILO_RETURN_IF_ERROR(mean_.BeginRound(global));
  global_ = global;
  if (!m_.CheckSameLayout(global).ok()) {
    m_ = global.ZerosLike();
    v_ = global.ZerosLike();
    const float tau2 = static_cast<float>(config_.tau * config_.tau);
    for (Tensor& t : v_.mutable_tensors()) {
      for (float& x : t.floats()) x = tau2;
    }
  }
  return absl::OkStatus();
}

Status ServerOptimizer::Accumulate(ModelState update, double weight) {
  return mean_.Accumulate(std::move(update), weight);
}

StatusOr<ModelState> ServerOptimizer::Finish() {
  // The mean update Δ = (global + mean) - global, element by element below.
  FEDSILO_ASSIGN_OR_RETURN(ModelState next, mean_.Finish());
  const float lr = static_cast<float>(config_.server_learning_rate);
  const float momentum = static_cast<float>(config_.server_momentum);
  const float b1 = static_cast<float>(config_.beta1);
  const float b2 = static_cast<float>(config_.beta2);
  const float tau = static_cast<float>(config_.tau);
  for (size_t t = 0; t < next.size(); ++t) {
    absl::Span<float> x = next.mutable_tensors()[t].floats();
    absl::Span<const float> x0 = global_.tensors()[t].floats();
    absl::Span<float> m = m_.mutable_tensors()[t].floats();
    absl::Span<float> v = v_.mutable_tensors()[t].floats();
    for (size_t i = 0; i < x.size(); ++i) {
      const float delta = x[i] - x0[i];
      if (kind_ == Kind::kMomentum) {
        m[i] = momentum * m[i] + delta;
        x[i] = x0[i] + lr * m[i];
        continue;
      }
      m[i] = b1 * m[i] + (1 - b1) * delta;
      const float d2 = delta * delta;
      if (kind_ == Kind::kAdagrad) {
        v[i] += d2;
      } else if (kind_ == Kind::kAdam) {
        v[i] = b2 * v[i] + (1 - b2) * d2;
      } else {
        const float diff = v[i] - d2;
        v[i] -= (1 - b2) * d2 * static_cast<float>((diff > 0) - (diff < 0));
      }
      x[i] = x0[i] + lr * m[i] / (std::sqrt(v[i]) + tau);
    }
  }
  global_ = ModelState();
  return next;
}

ModelState ServerOptimizer::State() const {
  ModelState state;
  for (const Tensor& t : m_.tensors()) {
    state.Add(Tensor::FromFloats("m/" + t.name(), t.shape(), t.floats())).IgnoreError();
  }
  if (kind_ != Kind::kMomentum) {
    for (const Tensor& t : v_.tensors()) {
      state.Add(Tensor::FromFloats("v/" + t.name(), t.shape(), t.floats())).IgnoreError();
    }
  }
  return state;
}

Status ServerOptimizer::RestoreState(const ModelState& state) {
  ModelState m, v;
  for (const Tensor& t : state.tensors()) {
    const bool is_m = absl::StartsWith(t.name(), "m/");
    const bool is_v = absl::StartsWith(t.name(), "v/");
    if (!is_m && !is_v) {
      return absl::InvalidArgumentError(
          absl::StrCat(name(), ": unexpected tensor '", t.name(), "' in the strategy state"));
    }
    FEDSILO_RETURN_IF_ERROR(
        (is_m ? m : v).Add(Tensor::FromFloats(t.name().substr(2), t.shape(), t.floats())));
  }
  if (kind_ != Kind::kMomentum && !v.CheckSameLayout(m).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name(), ": the state's moments do not match"));
  }
  m_ = std::move(m);
  v_ = kind_ != Kind::kMomentum ? std::move(v) : m_.ZerosLike();
  return absl::OkStatus();
}

}  // namespace fedsilo::strategy
