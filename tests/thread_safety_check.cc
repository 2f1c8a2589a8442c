// Compiled, not run, by the ThreadSafetyAnalysis tests (clang builds only):
// with FEDSILO_UNGUARDED a guarded member is read without its lock, which
// must fail the build; without it the same code builds. So the analysis is
// known to be on with the flags the tree is built with.
#include "core/mutex.h"

namespace fedsilo {

class Counter {
 public:
  int Read() {
#ifndef FEDSILO_UNGUARDED
    MutexLock lock(&mu_);
#endif
    return value_;
  }
  int WaitForPositive() {
    MutexLock lock(&mu_);
    while (value_ <= 0) cv_.Wait(&mu_);
    return value_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  int value_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedsilo

int main() { return fedsilo::Counter().Read(); }
