// Robust aggregation: rules that bound what a few hostile silos can do to the
// global model, at the price of needing every update of a round at once
// (memory O(model x silos)) and of ignoring example counts (every silo weighs
// the same: a weight is something a hostile silo could lie about).
//
//   median        coordinate-wise median of the updates
//   trimmed_mean  coordinate-wise mean after dropping the floor(trim_fraction x n)
//                 largest and smallest values
//   krum          the update whose n - f - 2 nearest neighbours (squared L2)
//                 are closest (Blanchard et al., NeurIPS 2017); f = byzantine
//   multi_krum    the mean of the multi_krum_keep (default n - f) updates with
//                 the best Krum scores
//
// new global = global + server_learning_rate x the aggregate.
#ifndef FEDSILO_STRATEGY_ROBUST_H_
#define FEDSILO_STRATEGY_ROBUST_H_

#include <string>
#include <vector>

#include "core/job_config.h"
#include "strategy/strategy.h"

namespace fedsilo::strategy {

class RobustAggregator : public Strategy {
 public:
  enum class Kind { kMedian, kTrimmedMean, kKrum, kMultiKrum };
  RobustAggregator(Kind kind, const StrategyConfig& config);

  std::string name() const override { return config_.name; }
  Status BeginRound(const ModelState& global) override;
  Status Accumulate(ModelState update, double weight) override;
  // FailedPrecondition when the round has too few updates for the rule
  // (Krum: more than 2f + 2; trimmed mean: at least one left).
  StatusOr<ModelState> Finish() override;
  std::vector<ModelState> TakeFolded() override { return std::exchange(done_, {}); }

  // The indices Krum / Multi-Krum chose in the last round (for tests and logs).
  const std::vector<size_t>& last_selected() const { return selected_; }

 private:
  StatusOr<ModelState> CoordinateWise();
  StatusOr<ModelState> Krum();

  Kind kind_;
  StrategyConfig config_;
  ModelState global_;
  std::vector<ModelState> updates_;
  std::vector<ModelState> done_;
  std::vector<size_t> selected_;
};

}  // namespace fedsilo::strategy

#endif  // FEDSILO_STRATEGY_ROBUST_H_
