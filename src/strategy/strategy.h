// Strategy: how the orchestrator turns the silos' updates of one round into
// the next global model. One instance is reused across rounds.
//
// Protocol per round: BeginRound(global), then Accumulate() once per accepted
// update (in a deterministic order chosen by the caller), then Finish().
// Thread safety: none; the orchestrator calls a strategy from one thread.
#ifndef FEDSILO_STRATEGY_STRATEGY_H_
#define FEDSILO_STRATEGY_STRATEGY_H_

#include <memory>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo::strategy {

class Strategy {
 public:
  virtual ~Strategy() = default;

  virtual std::string name() const = 0;

  // Strategies that send the silos more than the global model (SCAFFOLD's
  // control variate) say so; Broadcast() then gives what goes out, and each
  // update returned has the same layout.
  virtual bool ExtendsBroadcast() const { return false; }
  virtual ModelState Broadcast(const ModelState& global) const { return global; }

  // Starts a round from the current global model. The strategy may keep a
  // reference to nothing: it copies what it needs.
  virtual Status BeginRound(const ModelState& global) = 0;

  // Folds one silo's update (local model minus the global model) with its
  // weight (the silo's number of training examples). REQUIRES: the update has
  // the global model's layout and finite values; the caller checks both.
  virtual Status Accumulate(ModelState update, double weight) = 0;

  // Returns the new global model. FailedPrecondition if no update was
  // accumulated this round.
  virtual StatusOr<ModelState> Finish() = 0;

  // Hands back updates whose values have been folded in and are no longer
  // needed, so that the caller can reuse their memory (or drop them). Until
  // taken they are kept, so callers take them after each Accumulate().
  virtual std::vector<ModelState> TakeFolded() { return {}; }

  // What the strategy keeps across rounds (server optimizers' moments), as
  // named tensors; empty for stateless strategies. Checkpoints store it so
  // that a resumed job continues with it.
  virtual ModelState State() const { return ModelState(); }
  // InvalidArgument when `state` is not one this strategy wrote.
  virtual Status RestoreState(const ModelState& state) {
    if (state.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(name() + " keeps no state, but a state was given");
  }
};

// The strategy named by `config.name`, from the one registry of strategies
// (strategy.cc; its names are core's kStrategies, whose traits the job's
// rules and the silos read). InvalidArgument for unknown names.
// `total_silos`: the job's number of silos (SCAFFOLD's N).
StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategyConfig& config,
                                                   int total_silos = 1);

// The names the registry makes strategies for, in its order.
std::vector<absl::string_view> RegisteredStrategies();

}  // namespace fedsilo::strategy

#endif  // FEDSILO_STRATEGY_STRATEGY_H_
