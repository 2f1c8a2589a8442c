// DP-SGD's sampling arithmetic (ml/model.h), apart from the model so that the
// silo's policy and ledger need no libtorch.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ml/model.h"

namespace fedsilo::ml {

double DpSampleRate(int64_t n, int batch_size) {
  return std::min(1.0,
                  static_cast<double>(batch_size) / static_cast<double>(std::max<int64_t>(n, 1)));
}

int64_t DpStepsPerEpoch(int64_t n, int batch_size) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(n) / batch_size));
}

}  // namespace fedsilo::ml
