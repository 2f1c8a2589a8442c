// fedsilo-bench: performance measurements, one subcommand per benchmark. With
// --json each prints its figures as one JSON object on its last line.
//
//   fedsilo-bench aggregate   FedAvg throughput against memcpy on the same machine
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "strategy/fed_avg.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct AggregateOptions {
  int updates = 10;
  int64_t values = 10'000'000;
  int repeats = 5;
  int fold_batch = 4;
  bool json = false;
};

// Times FedAvg over `updates` updates of `values` float32 each (BeginRound
// excluded; Accumulate of every update plus Finish included), and memcpy of one
// update-sized buffer, both best of `repeats`. Aggregation rate counts all
// update bytes; copy rate counts the bytes copied.
int RunAggregate(const AggregateOptions& o) {
  using fedsilo::ModelState;
  using fedsilo::Tensor;
  const size_t n = static_cast<size_t>(o.values);
  const double update_bytes = static_cast<double>(n) * sizeof(float);
  std::printf("aggregate: FedAvg of %d updates x %lld float32 values (%.1f MB each), best of %d\n",
              o.updates, static_cast<long long>(o.values), update_bytes / 1e6, o.repeats);

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = dist(rng);
  ModelState global;
  (void)global.Add(Tensor::FromFloats("w", {o.values}, values));
  std::vector<ModelState> updates(static_cast<size_t>(o.updates));
  for (int i = 0; i < o.updates; ++i) {
    for (size_t j = 0; j < n; j += 4096) values[j] = dist(rng);  // make each update distinct
    (void)updates[i].Add(Tensor::FromFloats("w", {o.values}, values));
  }

  // The updates stay resident across repetitions: FedAvg hands them back
  // through TakeFolded(), so no repetition pays for allocating or freeing them.
  fedsilo::strategy::FedAvg fed_avg(1.0, o.fold_batch);
  double best_aggregate = 1e30;
  for (int r = 0; r < o.repeats; ++r) {
    if (!fed_avg.BeginRound(global).ok()) return 1;
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < o.updates; ++i) {
      if (!fed_avg.Accumulate(std::move(updates[i]), 100.0 + i).ok()) return 1;
    }
    auto next = fed_avg.Finish();
    const Clock::time_point end = Clock::now();
    if (!next.ok()) return 1;
    best_aggregate = std::min(best_aggregate, Seconds(start, end));
    updates = fed_avg.TakeFolded();  // in the order they were accumulated
    if (static_cast<int>(updates.size()) != o.updates) return 1;
  }

  std::vector<float> src(values), dst(n, 0.0f);
  double best_copy = 1e30;
  for (int r = 0; r < std::max(o.repeats, 5); ++r) {
    const Clock::time_point start = Clock::now();
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    const Clock::time_point end = Clock::now();
    best_copy = std::min(best_copy, Seconds(start, end));
  }
  // Keep the copy from being optimised away.
  if (dst[n / 2] != src[n / 2]) return 1;

  const double aggregate_rate = update_bytes * o.updates / best_aggregate;
  const double copy_rate = update_bytes / best_copy;
  const double ratio = aggregate_rate / copy_rate;
  std::printf("  aggregation  %8.3f s   %6.2f GB/s of updates\n", best_aggregate,
              aggregate_rate / 1e9);
  std::printf("  memcpy       %8.3f s   %6.2f GB/s\n", best_copy, copy_rate / 1e9);
  std::printf("  ratio (aggregation rate / copy rate)  %.2f\n", ratio);
  if (o.json) {
    nlohmann::json j = {{"benchmark", "aggregate"},
                        {"updates", o.updates},
                        {"values", o.values},
                        {"fold_batch", o.fold_batch},
                        {"aggregate_seconds", best_aggregate},
                        {"aggregate_gb_per_s", aggregate_rate / 1e9},
                        {"memcpy_seconds", best_copy},
                        {"memcpy_gb_per_s", copy_rate / 1e9},
                        {"ratio", ratio}};
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedsilo-bench: fedsilo's performance benchmarks"};
  app.require_subcommand(1);
  AggregateOptions agg;
  CLI::App* aggregate =
      app.add_subcommand("aggregate", "FedAvg aggregation throughput, compared with memcpy");
  aggregate->add_option("--updates", agg.updates, "Number of updates")->check(CLI::Range(1, 1000));
  aggregate->add_option("--values", agg.values, "float32 values per update")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 31));
  aggregate->add_option("--repeats", agg.repeats, "Repetitions; the best is reported")
      ->check(CLI::Range(1, 1000));
  aggregate->add_option("--fold-batch", agg.fold_batch, "Updates folded per pass")
      ->check(CLI::Range(1, 64));
  aggregate->add_flag("--json", agg.json, "Print a JSON summary as the last line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*aggregate) return RunAggregate(agg);
  return 2;
}
