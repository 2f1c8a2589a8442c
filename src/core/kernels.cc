#include "core/kernels.h"

#include <algorithm>
#include <cstddef>

namespace fedsilo::kernels {
namespace {

// Values per block: the block's partial sum stays in L1 while every input
// streams through once.
constexpr size_t kBlock = 1024;

// tmp[0..n) = (acc ? acc : 0) + sum_i w_i * in_i, over one block.
inline void FoldBlock(float* tmp, const float* acc, size_t offset, size_t n,
                      absl::Span<const float* const> inputs, absl::Span<const float> weights) {
  size_t first = 0;
  if (acc != nullptr) {
    const float* a = acc + offset;
    for (size_t j = 0; j < n; ++j) tmp[j] = a[j];
  } else if (!inputs.empty()) {
    const float* x = inputs[0] + offset;
    const float w = weights[0];
    for (size_t j = 0; j < n; ++j) tmp[j] = w * x[j];
    first = 1;
  } else {
    for (size_t j = 0; j < n; ++j) tmp[j] = 0.0f;
  }
  size_t i = first;
  // Two inputs per sweep halves the passes over tmp.
  for (; i + 1 < inputs.size(); i += 2) {
    const float* x = inputs[i] + offset;
    const float* y = inputs[i + 1] + offset;
    const float wx = weights[i], wy = weights[i + 1];
    for (size_t j = 0; j < n; ++j) tmp[j] += wx * x[j] + wy * y[j];
  }
  for (; i < inputs.size(); ++i) {
    const float* x = inputs[i] + offset;
    const float w = weights[i];
    for (size_t j = 0; j < n; ++j) tmp[j] += w * x[j];
  }
}

}  // namespace

void WeightedFold(absl::Span<float> out, bool accumulate, absl::Span<const float* const> inputs,
                  absl::Span<const float> weights) {
  alignas(64) float tmp[kBlock];
  const float* acc = accumulate ? out.data() : nullptr;
  for (size_t offset = 0; offset < out.size(); offset += kBlock) {
    const size_t n = std::min(kBlock, out.size() - offset);
    FoldBlock(tmp, acc, offset, n, inputs, weights);
    float* o = out.data() + offset;
    for (size_t j = 0; j < n; ++j) o[j] = tmp[j];
  }
}

void FoldAndApply(absl::Span<float> out, absl::Span<const float> base, float scale,
                  const float* acc, absl::Span<const float* const> inputs,
                  absl::Span<const float> weights) {
  alignas(64) float tmp[kBlock];
  for (size_t offset = 0; offset < out.size(); offset += kBlock) {
    const size_t n = std::min(kBlock, out.size() - offset);
    FoldBlock(tmp, acc, offset, n, inputs, weights);
    const float* b = base.data() + offset;
    float* o = out.data() + offset;
    for (size_t j = 0; j < n; ++j) o[j] = b[j] + scale * tmp[j];
  }
}

void Subtract(absl::Span<const float> a, absl::Span<const float> b, absl::Span<float> out) {
  for (size_t j = 0; j < out.size(); ++j) out[j] = a[j] - b[j];
}

void Axpy(float alpha, absl::Span<const float> x, absl::Span<float> y) {
  for (size_t j = 0; j < y.size(); ++j) y[j] += alpha * x[j];
}

void Scale(float alpha, absl::Span<float> x) {
  for (float& v : x) v *= alpha;
}

double SquaredNorm(absl::Span<const float> x) {
  double sum = 0.0;
  for (float v : x) sum += static_cast<double>(v) * v;
  return sum;
}

}  // namespace fedsilo::kernels
