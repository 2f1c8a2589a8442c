// SCAFFOLD (Karimireddy et al., ICML 2020), the orchestrator's side. The
// server control variate c goes to the silos with the global model (as
// "control/" tensors, core/control_variates.h); each silo corrects its local
// gradients by c - c_i, keeps its own c_i in its state, and returns its model
// update y_i - x with Δc_i = c_i+ - c_i. Then
//   x <- x + server_learning_rate x (example-weighted mean of the updates)
//   c <- c + (sum of the Δc_i) / N,  N = the job's number of silos
// c persists across rounds and in checkpoints (State()/RestoreState()).
#ifndef FEDSILO_STRATEGY_SCAFFOLD_H_
#define FEDSILO_STRATEGY_SCAFFOLD_H_

#include <string>
#include <vector>

#include "core/job_config.h"
#include "strategy/fed_avg.h"
#include "strategy/strategy.h"

namespace fedsilo::strategy {

class Scaffold : public Strategy {
 public:
  // REQUIRES: total_silos >= 1.
  Scaffold(const StrategyConfig& config, int total_silos);

  std::string name() const override { return "scaffold"; }
  bool ExtendsBroadcast() const override { return true; }
  ModelState Broadcast(const ModelState& global) const override;
  Status BeginRound(const ModelState& global) override;
  // `update` carries the model update and the "control/" Δc_i.
  Status Accumulate(ModelState update, double weight) override;
  StatusOr<ModelState> Finish() override;
  std::vector<ModelState> TakeFolded() override { return mean_.TakeFolded(); }
  ModelState State() const override { return control_; }
  Status RestoreState(const ModelState& state) override;

 private:
  int total_silos_;
  FedAvg mean_;
  ModelState control_;      // c
  ModelState control_sum_;  // sum of this round's Δc_i
};

}  // namespace fedsilo::strategy

#endif  // FEDSILO_STRATEGY_SCAFFOLD_H_
