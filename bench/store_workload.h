// The run store benchmark's workload, shared by `fedsilo-bench store` (the
// job store as fedsilo runs it, plain and with sealed values) and
// `fedsilo-bench-sqlcipher` (the same rows through Debian's SQLCipher): one
// job of R rounds; per round, every silo reports four metrics and the
// federation four, as a 10-silo digits run does.
#ifndef FEDSILO_BENCH_STORE_WORKLOAD_H_
#define FEDSILO_BENCH_STORE_WORKLOAD_H_

#include <string>
#include <vector>

namespace fedsilo::bench {

struct StoreMetric {
  std::string source;  // a silo or "global"
  std::string name;    // "{source}/{metric}"
  double value;
};

inline std::vector<StoreMetric> RoundMetrics(int round, int silos) {
  std::vector<StoreMetric> out;
  const double progress = 1.0 - 1.0 / (1.0 + round);
  for (int s = 1; s <= silos; ++s) {
    const std::string silo = "silo-" + std::to_string(s);
    out.push_back({silo, silo + "/num_examples", 1000.0 + 37 * s});
    out.push_back({silo, silo + "/train_loss", 2.3 * (1 - progress) + 0.001 * s});
    out.push_back({silo, silo + "/train_accuracy", 0.1 + 0.85 * progress - 0.001 * s});
    out.push_back({silo, silo + "/epsilon", 0.01 * round});
  }
  for (const char* m : {"test_loss", "test_accuracy", "test_auc", "train_loss"}) {
    out.push_back({"global", std::string("global/") + m, progress * 0.9 + 0.01});
  }
  return out;
}

}  // namespace fedsilo::bench

#endif  // FEDSILO_BENCH_STORE_WORKLOAD_H_
