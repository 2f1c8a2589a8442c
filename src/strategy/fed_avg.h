// FedAvg (McMahan et al. 2017): the new global model is the old one plus
// `server_learning_rate` times the example-weighted mean of the updates
// (1.0 = plain FedAvg).
//
// Streaming: updates are folded into one running sum as they arrive, a few at
// a time (`fold_batch`), so memory is O(model * fold_batch), independent of the
// number of silos; folding several updates per pass over the running sum reads
// and writes it once for all of them, which is what makes it run near memory
// bandwidth. Thread safety: none (see Strategy).
#ifndef FEDSILO_STRATEGY_FED_AVG_H_
#define FEDSILO_STRATEGY_FED_AVG_H_

#include <vector>

#include "strategy/strategy.h"

namespace fedsilo::strategy {

class FedAvg : public Strategy {
 public:
  // REQUIRES: server_learning_rate > 0, fold_batch >= 1.
  explicit FedAvg(double server_learning_rate = 1.0, int fold_batch = 4);

  std::string name() const override { return "fedavg"; }
  Status BeginRound(const ModelState& global) override;
  Status Accumulate(ModelState update, double weight) override;
  StatusOr<ModelState> Finish() override;
  std::vector<ModelState> TakeFolded() override;

 private:
  // Folds the pending updates into sum_ and drops them.
  void FoldPending();

  double server_learning_rate_;
  size_t fold_batch_;
  ModelState global_;
  ModelState sum_;  // sum of weight * update over folded updates; kept across rounds
  bool sum_valid_ = false;
  std::vector<ModelState> pending_;
  std::vector<ModelState> folded_;  // folded, waiting for TakeFolded()
  std::vector<float> pending_weights_;
  double total_weight_ = 0;
  int accumulated_ = 0;
};

}  // namespace fedsilo::strategy

#endif  // FEDSILO_STRATEGY_FED_AVG_H_
