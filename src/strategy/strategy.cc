#include "strategy/strategy.h"

#include "absl/strings/str_cat.h"
#include "strategy/fed_avg.h"

namespace fedsilo::strategy {

StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategyConfig& config) {
  if (config.name == "fedavg") return std::make_unique<FedAvg>(config.server_learning_rate);
  return absl::InvalidArgumentError(
      absl::StrCat("strategy.name: unknown strategy '", config.name, "'"));
}

}  // namespace fedsilo::strategy
