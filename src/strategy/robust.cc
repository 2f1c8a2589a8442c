#include "strategy/robust.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedsilo::strategy {

RobustAggregator::RobustAggregator(Kind kind, const StrategyConfig& config)
    : kind_(kind), config_(config) {}

Status RobustAggregator::BeginRound(const ModelState& global) {
  global_ = global;
  updates_.clear();
  done_.clear();
  return absl::OkStatus();
}

Status RobustAggregator::Accumulate(ModelState update, double /*weight*/) {
  updates_.push_back(std::move(update));
  return absl::OkStatus();
}

StatusOr<ModelState> RobustAggregator::CoordinateWise() {
  const size_t n = updates_.size();
  size_t cut = 0;
  if (kind_ == Kind::kTrimmedMean) {
    cut = static_cast<size_t>(config_.trim_fraction * static_cast<double>(n));
  }
  ModelState aggregate = global_.ZerosLike();
  std::vector<float> column(n);
  for (size_t t = 0; t < aggregate.size(); ++t) {
    absl::Span<float> out = aggregate.mutable_tensors()[t].floats();
    for (size_t i = 0; i < out.size(); ++i) {
      for (size_t u = 0; u < n; ++u) column[u] = updates_[u].tensors()[t].floats()[i];
      if (kind_ == Kind::kMedian) {
        const size_t mid = n / 2;
        std::nth_element(column.begin(), column.begin() + mid, column.end());
        float median = column[mid];
        if (n % 2 == 0) {
          const float below = *std::max_element(column.begin(), column.begin() + mid);
          median = 0.5f * (median + below);
        }
        out[i] = median;
      } else {
        std::sort(column.begin(), column.end());
        double sum = 0;
        for (size_t u = cut; u < n - cut; ++u) sum += column[u];
        out[i] = static_cast<float>(sum / static_cast<double>(n - 2 * cut));
      }
    }
  }
  return aggregate;
}

StatusOr<ModelState> RobustAggregator::Krum() {
  const size_t n = updates_.size();
  const size_t f = static_cast<size_t>(config_.byzantine);
  if (n <= 2 * f + 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        name(), ": needs more than 2 x byzantine + 2 = ", 2 * f + 2, " updates, got ", n));
  }
  // Squared distances between every pair of updates.
  std::vector<std::vector<double>> d(n, std::vector<double>(n, 0));
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = a + 1; b < n; ++b) {
      double sum = 0;
      for (size_t t = 0; t < global_.size(); ++t) {
        absl::Span<const float> x = updates_[a].tensors()[t].floats();
        absl::Span<const float> y = updates_[b].tensors()[t].floats();
        for (size_t i = 0; i < x.size(); ++i) {
          const double diff = static_cast<double>(x[i]) - y[i];
          sum += diff * diff;
        }
      }
      d[a][b] = d[b][a] = sum;
    }
  }
  // Score: the sum of the n - f - 2 smallest distances to the others.
  std::vector<double> score(n);
  for (size_t a = 0; a < n; ++a) {
    std::vector<double> others;
    for (size_t b = 0; b < n; ++b) {
      if (b != a) others.push_back(d[a][b]);
    }
    std::sort(others.begin(), others.end());
    score[a] = std::accumulate(others.begin(), others.begin() + static_cast<long>(n - f - 2), 0.0);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return score[a] < score[b]; });
  size_t keep = 1;
  if (kind_ == Kind::kMultiKrum) {
    keep = config_.multi_krum_keep > 0 ? static_cast<size_t>(config_.multi_krum_keep) : n - f;
    keep = std::min(keep, n);
  }
  selected_.assign(order.begin(), order.begin() + static_cast<long>(keep));
  std::sort(selected_.begin(), selected_.end());
  ModelState aggregate = global_.ZerosLike();
  for (size_t t = 0; t < aggregate.size(); ++t) {
    absl::Span<float> out = aggregate.mutable_tensors()[t].floats();
    for (size_t i = 0; i < out.size(); ++i) {
      double sum = 0;
      for (size_t u : selected_) sum += updates_[u].tensors()[t].floats()[i];
      out[i] = static_cast<float>(sum / static_cast<double>(keep));
    }
  }
  return aggregate;
}

StatusOr<ModelState> RobustAggregator::Finish() {
  if (updates_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(name(), ": no update was accumulated this round"));
  }
  if (kind_ == Kind::kTrimmedMean &&
      2 * static_cast<size_t>(config_.trim_fraction * static_cast<double>(updates_.size())) >=
          updates_.size()) {
    return absl::FailedPreconditionError("trimmed_mean: trim_fraction leaves no update");
  }
  StatusOr<ModelState> aggregate =
      kind_ == Kind::kMedian || kind_ == Kind::kTrimmedMean ? CoordinateWise() : Krum();
  if (!aggregate.ok()) return aggregate.status();
  ModelState next = std::move(global_);
  const float lr = static_cast<float>(config_.server_learning_rate);
  for (size_t t = 0; t < next.size(); ++t) {
    absl::Span<float> x = next.mutable_tensors()[t].floats();
    absl::Span<const float> a = aggregate->tensors()[t].floats();
    for (size_t i = 0; i < x.size(); ++i) x[i] += lr * a[i];
  }
  for (ModelState& u : updates_) done_.push_back(std::move(u));
  updates_.clear();
  global_ = ModelState();
  return next;
}

}  // namespace fedsilo::strategy
