// How libtorch runs in fedsilo: one thread per training thread (parallelism
// comes from silos, or parties, side by side).
#ifndef FEDSILO_ML_TORCH_THREADS_H_
#define FEDSILO_ML_TORCH_THREADS_H_

namespace fedsilo::ml {

// Runs libtorch (OpenMP) and OpenBLAS single-threaded on the calling thread.
// OpenMP's thread count is per thread, so every thread that trains calls it
// (once is enough; later calls return at once).
void UseOneThreadHere();

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_TORCH_THREADS_H_
