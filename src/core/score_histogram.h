// ScoreHistogram: how a binary classifier's scores fall for the positive and
// the negative examples of one silo, in fine bins of the log-odds. Silos'
// histograms add up, so the federation's ROC AUC over all silos' test rows
// can be computed without any silo sending a score: pairs in different bins
// are ranked exactly, pairs in one bin (log-odds within 0.02 of each other)
// count one half, as tied scores do.
//
// Travels as a ModelState: one float64 tensor "score_histogram" of shape
// [2, kBins], positives first. A value type; not thread-safe.
#ifndef FEDSILO_CORE_SCORE_HISTOGRAM_H_
#define FEDSILO_CORE_SCORE_HISTOGRAM_H_

#include <vector>

#include "absl/strings/string_view.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo {

class ScoreHistogram {
 public:
  static constexpr int kBins = 3000;
  static constexpr double kMinLogOdds = -30, kMaxLogOdds = 30;  // clamped beyond

  ScoreHistogram() : positives_(kBins, 0.0), negatives_(kBins, 0.0) {}

  // `log_odds` = log p(positive) - log p(negative).
  void Add(double log_odds, bool positive);
  void Merge(const ScoreHistogram& other);
  // 0.5 when either class is absent, like RocAuc.
  double Auc() const;

  ModelState ToState() const;
  // InvalidArgument naming `source` for anything but a histogram.
  static StatusOr<ScoreHistogram> FromState(const ModelState& state, absl::string_view source);

 private:
  std::vector<double> positives_, negatives_;
};

}  // namespace fedsilo

#endif  // FEDSILO_CORE_SCORE_HISTOGRAM_H_
