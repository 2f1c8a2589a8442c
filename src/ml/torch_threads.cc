#include "ml/torch_threads.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <mutex>

namespace fedsilo::ml {

void UseOneThreadHere() {
  thread_local bool configured = false;
  if (configured) return;
  configured = true;
  at::set_num_threads(1);
  static std::once_flag blas_once;
  std::call_once(blas_once, [] {
    // OpenBLAS keeps its own pool; set it through the symbol when it is loaded.
    using SetThreads = void (*)(int);
    if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
      f(1);
    }
  });
}

}  // namespace fedsilo::ml
