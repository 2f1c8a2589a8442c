// A shuffle that every build gives alike. std::shuffle's algorithm is the
// standard library's own, so two parties built differently could order the
// same rows differently from the same seed; here the generator
// (std::mt19937_64, fully specified) is drawn from in a fixed way:
// Fisher-Yates from the back, each index by rejection sampling (unbiased).
#ifndef FEDSILO_CORE_SEEDED_SHUFFLE_H_
#define FEDSILO_CORE_SEEDED_SHUFFLE_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace fedsilo {

// A uniform integer in [0, bound] from `rng`'s raw output.
inline uint64_t SeededIndex(std::mt19937_64& rng, uint64_t bound) {
  if (bound == UINT64_MAX) return rng();
  const uint64_t range = bound + 1;
  // The largest multiple of `range` that fits; draws above it are redrawn.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % range + 1) % range;
  uint64_t x = rng();
  while (x > limit) x = rng();
  return x % range;
}

template <typename T>
void SeededShuffle(std::vector<T>& values, std::mt19937_64& rng) {
  for (size_t i = values.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(SeededIndex(rng, i - 1));
    std::swap(values[i - 1], values[j]);
  }
}

}  // namespace fedsilo

#endif  // FEDSILO_CORE_SEEDED_SHUFFLE_H_
