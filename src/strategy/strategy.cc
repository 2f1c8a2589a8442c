#include "strategy/strategy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "strategy/fed_avg.h"
#include "strategy/robust.h"
#include "strategy/scaffold.h"
#include "strategy/server_optimizer.h"

namespace fedsilo::strategy {

StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategyConfig& config, int total_silos) {
  const std::string& n = config.name;
  if (n == "fedavg" || n == "fedprox") {
    return std::make_unique<FedAvg>(config.server_learning_rate);
  }
  if (n == "scaffold") return std::make_unique<Scaffold>(config, std::max(1, total_silos));
  using Opt = ServerOptimizer::Kind;
  if (n == "fedavgm") return std::make_unique<ServerOptimizer>(Opt::kMomentum, config);
  if (n == "fedadagrad") return std::make_unique<ServerOptimizer>(Opt::kAdagrad, config);
  if (n == "fedadam") return std::make_unique<ServerOptimizer>(Opt::kAdam, config);
  if (n == "fedyogi") return std::make_unique<ServerOptimizer>(Opt::kYogi, config);
  using Robust = RobustAggregator::Kind;
  if (n == "median") return std::make_unique<RobustAggregator>(Robust::kMedian, config);
  if (n == "trimmed_mean") return std::make_unique<RobustAggregator>(Robust::kTrimmedMean, config);
  if (n == "krum") return std::make_unique<RobustAggregator>(Robust::kKrum, config);
  if (n == "multi_krum") return std::make_unique<RobustAggregator>(Robust::kMultiKrum, config);
  return absl::InvalidArgumentError(absl::StrCat("strategy.name: unknown strategy '", n, "'"));
}

}  // namespace fedsilo::strategy
