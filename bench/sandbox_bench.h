// `fedsilo-bench sandbox`: a silo's local training round with a TorchScript
// module in its sandboxed worker (ml/sandbox.h) against the same module loaded
// in the process itself -- the examples' digits module and the MNIST CNN.
#ifndef FEDSILO_BENCH_SANDBOX_BENCH_H_
#define FEDSILO_BENCH_SANDBOX_BENCH_H_

#include <string>

namespace fedsilo::bench {

struct SandboxBenchOptions {
  int rounds = 5;             // rounds timed per model and mode
  int mnist_examples = 6000;  // one silo's share (mnist-cnn-noniid: 10 silos)
  std::string data_dir;       // the built-in data sets (default: as the CLI finds them)
  bool json = false;
};

int RunSandboxBench(const SandboxBenchOptions& options);

}  // namespace fedsilo::bench

#endif  // FEDSILO_BENCH_SANDBOX_BENCH_H_
