// Server-side optimizers on the round's pseudo-gradient Δ, the
// example-weighted mean of the silos' updates (local minus global model):
//
//   fedavgm    (Hsu et al. 2019)    v <- momentum v + Δ;                 x <- x + lr v
//   fedadagrad (Reddi et al. 2021)  m <- b1 m + (1-b1) Δ;  v <- v + Δ²;  x <- x + lr m / (sqrt(v) +
//   tau) fedadam                         m as above; v <- b2 v + (1-b2) Δ²;   same step fedyogi m
//   as above; v <- v - (1-b2) Δ² sign(v - Δ²); same step
//
// ("Adaptive Federated Optimization", ICLR 2021, Algorithm 2: no bias
// correction; v starts at tau².) The moments persist across rounds and are
// part of the strategy's state (State()/RestoreState()), which checkpoints
// carry so that a resumed job continues with them.
//
// Streaming: the mean is folded as in FedAvg; memory O(model) for the moments.
#ifndef FEDSILO_STRATEGY_SERVER_OPTIMIZER_H_
#define FEDSILO_STRATEGY_SERVER_OPTIMIZER_H_

#include <string>

#include "core/job_config.h"
#include "strategy/fed_avg.h"
#include "strategy/strategy.h"

namespace fedsilo::strategy {

class ServerOptimizer : public Strategy {
 public:
  enum class Kind { kMomentum, kAdagrad, kAdam, kYogi };
  ServerOptimizer(Kind kind, const StrategyConfig& config);

  std::string name() const override { return config_.name; }
  Status BeginRound(const ModelState& global) override;
  Status Accumulate(ModelState update, double weight) override;
  StatusOr<ModelState> Finish() override;
  std::vector<ModelState> TakeFolded() override { return mean_.TakeFolded(); }
  ModelState State() const override;
  Status RestoreState(const ModelState& state) override;

 private:
  Kind kind_;
  StrategyConfig config_;
  FedAvg mean_{1.0};  // the example-weighted mean, applied to global_ with rate 1
  ModelState global_;
  ModelState m_;  // first moment (fedavgm: the velocity)
  ModelState v_;  // second moment (adaptive kinds)
};

}  // namespace fedsilo::strategy

#endif  // FEDSILO_STRATEGY_SERVER_OPTIMIZER_H_
