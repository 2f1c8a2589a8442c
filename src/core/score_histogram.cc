#include "core/score_histogram.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace fedsilo {
namespace {
constexpr absl::string_view kName = "score_histogram";
}  // namespace

void ScoreHistogram::Add(double log_odds, bool positive) {
  const double clamped =
      std::clamp(std::isnan(log_odds) ? 0.0 : log_odds, kMinLogOdds, kMaxLogOdds);
  const int bin = std::min(
      kBins - 1, static_cast<int>((clamped - kMinLogOdds) / (kMaxLogOdds - kMinLogOdds) * kBins));
  (positive ? positives_ : negatives_)[static_cast<size_t>(bin)] += 1;
}

void ScoreHistogram::Merge(const ScoreHistogram& other) {
  for (int i = 0; i < kBins; ++i) {
    positives_[i] += other.positives_[i];
    negatives_[i] += other.negatives_[i];
  }
}

double ScoreHistogram::Auc() const {
  double pairs = 0, negatives_below = 0, p = 0, n = 0;
  for (int i = 0; i < kBins; ++i) {
    pairs += positives_[i] * (negatives_below + 0.5 * negatives_[i]);
    negatives_below += negatives_[i];
    p += positives_[i];
    n += negatives_[i];
  }
  return p == 0 || n == 0 ? 0.5 : pairs / (p * n);
}

ModelState ScoreHistogram::ToState() const {
  Tensor t(std::string(kName), DType::kFloat64, {2, kBins});
  double* v = reinterpret_cast<double*>(t.data());
  std::copy(positives_.begin(), positives_.end(), v);
  std::copy(negatives_.begin(), negatives_.end(), v + kBins);
  ModelState state;
  (void)state.Add(std::move(t));
  return state;
}

StatusOr<ScoreHistogram> ScoreHistogram::FromState(const ModelState& state,
                                                   absl::string_view source) {
  const Tensor* t = state.Find(kName);
  if (state.size() != 1 || t == nullptr || t->dtype() != DType::kFloat64 ||
      t->shape() != std::vector<int64_t>{2, kBins}) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a score histogram of 2 x ", kBins, " counts"));
  }
  const double* v = reinterpret_cast<const double*>(t->data());
  ScoreHistogram h;
  for (int i = 0; i < 2 * kBins; ++i) {
    if (!(v[i] >= 0) || v[i] != std::floor(v[i]) || v[i] > 1e15) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": a score histogram count is not a count"));
    }
  }
  std::copy(v, v + kBins, h.positives_.begin());
  std::copy(v + kBins, v + 2 * kBins, h.negatives_.begin());
  return h;
}

}  // namespace fedsilo
