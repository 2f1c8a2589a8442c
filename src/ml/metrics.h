// Evaluation metrics for classifiers, computed from predictions (no libtorch).
#ifndef FEDSILO_ML_METRICS_H_
#define FEDSILO_ML_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fedsilo::ml {

struct ClassificationMetrics {
  int64_t examples = 0;
  double loss = 0;  // mean cross-entropy
  double accuracy = 0;
  // Binary tasks only (class 1 is "positive"):
  bool binary = false;
  double precision = 0;  // 0 when nothing is predicted positive
  double recall = 0;     // 0 when there are no positives
  double auc = 0;        // ROC AUC; 0.5 when only one class is present
  // The counts behind precision and recall, so that silos' results add up.
  int64_t true_positives = 0, false_positives = 0, false_negatives = 0;

  // {"loss": .., "accuracy": .., and for binary tasks "precision", "recall", "auc"}.
  std::map<std::string, double> ToMap() const;
};

// `predicted` holds the predicted class of each example; for binary tasks
// `positive_scores` holds the model's probability of class 1 (used for AUC),
// otherwise it is empty. REQUIRES: equal lengths.
ClassificationMetrics ComputeClassificationMetrics(double mean_loss,
                                                   const std::vector<int64_t>& labels,
                                                   const std::vector<int64_t>& predicted,
                                                   const std::vector<float>& positive_scores);

// Area under the ROC curve by the rank-sum (Mann-Whitney U) statistic; tied
// scores count one half. 0.5 when either class is absent.
double RocAuc(const std::vector<float>& scores, const std::vector<int64_t>& labels);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_METRICS_H_
