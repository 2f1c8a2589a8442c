// fedsilo-bench store: the job store (orchestrator/job_store.h) recording a
// long run's rounds and reading its metrics back, plain and with its values
// sealed under a storage key (docs/encryption-at-rest.md, "The run store").
#ifndef FEDSILO_BENCH_STORE_BENCH_H_
#define FEDSILO_BENCH_STORE_BENCH_H_

namespace fedsilo::bench {

struct StoreBenchOptions {
  int rounds = 1000;
  int silos = 10;
  bool json = false;
};

int RunStoreBench(const StoreBenchOptions& options);

}  // namespace fedsilo::bench

#endif  // FEDSILO_BENCH_STORE_BENCH_H_
