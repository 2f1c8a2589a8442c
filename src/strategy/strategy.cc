#include "strategy/strategy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "strategy/fed_avg.h"
#include "strategy/robust.h"
#include "strategy/scaffold.h"
#include "strategy/server_optimizer.h"

namespace fedsilo::strategy {

namespace {

// Every strategy, by the name core/job_config.h's kStrategies gives it.
struct Registered {
  absl::string_view name;
  std::unique_ptr<Strategy> (*make)(const StrategyConfig& config, int total_silos);
};

using Opt = ServerOptimizer::Kind;
using Robust = RobustAggregator::Kind;

const Registered kRegistry[] = {
    {"fedavg",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<FedAvg>(c.server_learning_rate);
     }},
    // FedProx aggregates like FedAvg; its proximal term is in the silos' training.
    {"fedprox",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<FedAvg>(c.server_learning_rate);
     }},
    {"scaffold",
     [](const StrategyConfig& c, int silos) -> std::unique_ptr<Strategy> {
       return std::make_unique<Scaffold>(c, std::max(1, silos));
     }},
    {"fedavgm",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<ServerOptimizer>(Opt::kMomentum, c);
     }},
    {"fedadagrad",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<ServerOptimizer>(Opt::kAdagrad, c);
     }},
    {"fedadam",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<ServerOptimizer>(Opt::kAdam, c);
     }},
    {"fedyogi",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<ServerOptimizer>(Opt::kYogi, c);
     }},
    {"median",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<RobustAggregator>(Robust::kMedian, c);
     }},
    {"trimmed_mean",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<RobustAggregator>(Robust::kTrimmedMean, c);
     }},
    {"krum",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<RobustAggregator>(Robust::kKrum, c);
     }},
    {"multi_krum",
     [](const StrategyConfig& c, int) -> std::unique_ptr<Strategy> {
       return std::make_unique<RobustAggregator>(Robust::kMultiKrum, c);
     }},
};

}  // namespace

StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategyConfig& config, int total_silos) {
  for (const Registered& r : kRegistry) {
    if (r.name == config.name) return r.make(config, total_silos);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("strategy.name: unknown strategy '", config.name, "'"));
}

std::vector<absl::string_view> RegisteredStrategies() {
  std::vector<absl::string_view> names;
  for (const Registered& r : kRegistry) names.push_back(r.name);
  return names;
}

}  // namespace fedsilo::strategy
