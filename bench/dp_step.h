// `fedsilo-bench dp-step`: the time of one DP-SGD step against one ordinary
// SGD step, for the built-in 2NN and CNN on MNIST-shaped batches.
#ifndef FEDSILO_BENCH_DP_STEP_H_
#define FEDSILO_BENCH_DP_STEP_H_

namespace fedsilo::bench {

struct DpStepOptions {
  int batch_size = 64;
  int steps = 50;  // steps timed per model and mode
  bool json = false;
};

int RunDpStep(const DpStepOptions& options);

}  // namespace fedsilo::bench

#endif  // FEDSILO_BENCH_DP_STEP_H_
