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

std::unique_ptr<Strategy> MakeFedAvg(const StrategyConfig& c, int) {
  return std::make_unique<FedAvg>(c.server_learning_rate);
}

std::unique_ptr<Strategy> MakeScaffold(const StrategyConfig& c, int total_silos) {
  return std::make_unique<Scaffold>(c, std::max(1, total_silos));
}

template <ServerOptimizer::Kind kKind>
std::unique_ptr<Strategy> MakeOptimizer(const StrategyConfig& c, int) {
  return std::make_unique<ServerOptimizer>(kKind, c);
}

template <RobustAggregator::Kind kKind>
std::unique_ptr<Strategy> MakeRobust(const StrategyConfig& c, int) {
  return std::make_unique<RobustAggregator>(kKind, c);
}

using Opt = ServerOptimizer::Kind;
using Robust = RobustAggregator::Kind;

const Registered kRegistry[] = {
    {"fedavg", MakeFedAvg},
    // FedProx aggregates like FedAvg; its proximal term is in the silos' training.
    {"fedprox", MakeFedAvg},
    {"scaffold", MakeScaffold},
    {"fedavgm", MakeOptimizer<Opt::kMomentum>},
    {"fedadagrad", MakeOptimizer<Opt::kAdagrad>},
    {"fedadam", MakeOptimizer<Opt::kAdam>},
    {"fedyogi", MakeOptimizer<Opt::kYogi>},
    {"median", MakeRobust<Robust::kMedian>},
    {"trimmed_mean", MakeRobust<Robust::kTrimmedMean>},
    {"krum", MakeRobust<Robust::kKrum>},
    {"multi_krum", MakeRobust<Robust::kMultiKrum>},
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
