// Arithmetic on flat float spans: the inner loops of aggregation, update
// computation and clipping. Written for memory bandwidth: each input is read
// once and each output written once per call.
#ifndef FEDSILO_CORE_KERNELS_H_
#define FEDSILO_CORE_KERNELS_H_

#include "absl/types/span.h"

namespace fedsilo::kernels {

// out[j] = (accumulate ? out[j] : 0) + sum_i weights[i] * inputs[i][j].
// Folding several inputs in one pass reads `out` once for all of them.
// REQUIRES: inputs.size() == weights.size(); every input has out.size() values.
void WeightedFold(absl::Span<float> out, bool accumulate, absl::Span<const float* const> inputs,
                  absl::Span<const float> weights);

// out[j] = base[j] + scale * ((acc ? acc[j] : 0) + sum_i weights[i] * inputs[i][j]).
// The last step of a weighted average folded into the final pass over the
// remaining inputs. `acc` may be null. `out` may alias `base` or `acc`.
void FoldAndApply(absl::Span<float> out, absl::Span<const float> base, float scale,
                  const float* acc, absl::Span<const float* const> inputs,
                  absl::Span<const float> weights);

// out[j] = a[j] - b[j]. REQUIRES: equal sizes.
void Subtract(absl::Span<const float> a, absl::Span<const float> b, absl::Span<float> out);

// y[j] += alpha * x[j].
void Axpy(float alpha, absl::Span<const float> x, absl::Span<float> y);

// x[j] *= alpha.
void Scale(float alpha, absl::Span<float> x);

// Sum of squares, accumulated in double.
double SquaredNorm(absl::Span<const float> x);

}  // namespace fedsilo::kernels

#endif  // FEDSILO_CORE_KERNELS_H_
