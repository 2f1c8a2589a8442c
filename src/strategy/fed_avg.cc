#include "strategy/fed_avg.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/kernels.h"

namespace fedsilo::strategy {

FedAvg::FedAvg(double server_learning_rate, int fold_batch)
    : server_learning_rate_(server_learning_rate), fold_batch_(static_cast<size_t>(fold_batch)) {}

Status FedAvg::BeginRound(const ModelState& global) {
  for (const Tensor& t : global.tensors()) {
    if (t.dtype() != DType::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat("fedavg: tensor '", t.name(), "' is ",
                                                     DTypeName(t.dtype()),
                                                     "; only float32 models are supported"));
    }
  }
  global_ = global;
  // Reuse the sum's memory from the last round when the layout is unchanged.
  if (!sum_.CheckSameLayout(global_).ok()) sum_ = global_.ZerosLike();
  sum_valid_ = false;
  pending_.clear();
  pending_weights_.clear();
  folded_.clear();
  total_weight_ = 0;
  accumulated_ = 0;
  return absl::OkStatus();
}

std::vector<ModelState> FedAvg::TakeFolded() { return std::exchange(folded_, {}); }

Status FedAvg::Accumulate(ModelState update, double weight) {
  if (!(weight > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fedavg: update weight must be > 0, got ", weight));
  }
  pending_.push_back(std::move(update));
  pending_weights_.push_back(static_cast<float>(weight));
  total_weight_ += weight;
  ++accumulated_;
  if (pending_.size() >= fold_batch_) FoldPending();
  return absl::OkStatus();
}

void FedAvg::FoldPending() {
  if (pending_.empty()) return;
  std::vector<const float*> inputs(pending_.size());
  for (size_t t = 0; t < sum_.size(); ++t) {
    for (size_t i = 0; i < pending_.size(); ++i)
      inputs[i] = pending_[i].tensors()[t].floats().data();
    kernels::WeightedFold(sum_.mutable_tensors()[t].floats(), sum_valid_, inputs, pending_weights_);
  }
  sum_valid_ = true;
  for (ModelState& u : pending_) folded_.push_back(std::move(u));
  pending_.clear();
  pending_weights_.clear();
}

StatusOr<ModelState> FedAvg::Finish() {
  if (accumulated_ == 0) {
    return absl::FailedPreconditionError("fedavg: no update was accumulated this round");
  }
  // new = global + lr * (sum + remaining) / total, in one pass over the
  // remaining updates. The result reuses the old global's storage.
  const float scale = static_cast<float>(server_learning_rate_ / total_weight_);
  ModelState next = std::move(global_);
  std::vector<const float*> inputs(pending_.size());
  for (size_t t = 0; t < next.size(); ++t) {
    for (size_t i = 0; i < pending_.size(); ++i)
      inputs[i] = pending_[i].tensors()[t].floats().data();
    absl::Span<float> out = next.mutable_tensors()[t].floats();
    kernels::FoldAndApply(out, out, scale, sum_valid_ ? sum_.tensors()[t].floats().data() : nullptr,
                          inputs, pending_weights_);
  }
  for (ModelState& u : pending_) folded_.push_back(std::move(u));
  pending_.clear();
  pending_weights_.clear();
  accumulated_ = 0;
  global_ = ModelState();
  return next;
}

}  // namespace fedsilo::strategy
