#include "ml/metrics.h"

#include <algorithm>
#include <numeric>

namespace fedsilo::ml {

std::map<std::string, double> ClassificationMetrics::ToMap() const {
  std::map<std::string, double> m = {{"loss", loss}, {"accuracy", accuracy}};
  if (binary) {
    m["precision"] = precision;
    m["recall"] = recall;
    m["auc"] = auc;
  }
  return m;
}

double RocAuc(const std::vector<float>& scores, const std::vector<int64_t>& labels) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Average ranks (1-based) over ties, summed over positives.
  double positive_rank_sum = 0;
  int64_t positives = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (size_t k = i; k < j; ++k) {
      if (labels[order[k]] == 1) {
        positive_rank_sum += rank;
        ++positives;
      }
    }
    i = j;
  }
  const int64_t negatives = static_cast<int64_t>(n) - positives;
  if (positives == 0 || negatives == 0) return 0.5;
  const double u = positive_rank_sum - static_cast<double>(positives) * (positives + 1) / 2.0;
  return u / (static_cast<double>(positives) * static_cast<double>(negatives));
}

ClassificationMetrics ComputeClassificationMetrics(double mean_loss,
                                                   const std::vector<int64_t>& labels,
                                                   const std::vector<int64_t>& predicted,
                                                   const std::vector<float>& positive_scores) {
  ClassificationMetrics m;
  m.examples = static_cast<int64_t>(labels.size());
  m.loss = mean_loss;
  int64_t correct = 0, tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    correct += predicted[i] == labels[i];
    tp += predicted[i] == 1 && labels[i] == 1;
    fp += predicted[i] == 1 && labels[i] != 1;
    fn += predicted[i] != 1 && labels[i] == 1;
  }
  m.accuracy = labels.empty() ? 0.0 : static_cast<double>(correct) / labels.size();
  if (!positive_scores.empty()) {
    m.binary = true;
    m.precision = tp + fp == 0 ? 0.0 : static_cast<double>(tp) / (tp + fp);
    m.recall = tp + fn == 0 ? 0.0 : static_cast<double>(tp) / (tp + fn);
    m.auc = RocAuc(positive_scores, labels);
    m.true_positives = tp;
    m.false_positives = fp;
    m.false_negatives = fn;
  }
  return m;
}

}  // namespace fedsilo::ml
