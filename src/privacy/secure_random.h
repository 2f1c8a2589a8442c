// SecureRandom: the randomness differential privacy rests on -- DP-SGD's
// Poisson sampling and Gaussian noise, central DP's noise. A privacy
// guarantee holds only if nobody who sees the noisy result can predict the
// noise: a generator seeded from the job (which the orchestrator knows), or a
// statistical one whose state can be recovered from its output (Mersenne
// Twister), would let them subtract it. So this is a cryptographically secure
// generator: AES-256 in counter mode (OpenSSL, AES-NI where the CPU has it)
// keyed with 256 bits from the operating system (getrandom via RAND_bytes).
//
// Gaussians come from the ziggurat method (Marsaglia and Tsang, "The
// Ziggurat Method for Generating Random Variables", J. Stat. Softw. 2000),
// exact up to the generator's 32-bit draws, at a few nanoseconds a value.
//
// Thread safety: one SecureRandom per thread (it is not shared); the key is
// wiped when it is destroyed.
#ifndef FEDSILO_PRIVACY_SECURE_RANDOM_H_
#define FEDSILO_PRIVACY_SECURE_RANDOM_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace fedsilo::privacy {

class SecureRandom {
 public:
  using Key = std::array<uint8_t, 32>;

  // Keyed with 256 bits from the operating system. Aborts if the operating
  // system has no randomness to give (there is nothing safe to fall back on).
  SecureRandom();
  // Keyed with `key`: the same key gives the same stream. For tests only.
  static SecureRandom WithKeyForTesting(const Key& key);
  ~SecureRandom();
  SecureRandom(SecureRandom&&) noexcept;
  SecureRandom& operator=(SecureRandom&&) noexcept;
  SecureRandom(const SecureRandom&) = delete;
  SecureRandom& operator=(const SecureRandom&) = delete;

  uint32_t Next32() { return static_cast<uint32_t>(Next64()); }
  uint64_t Next64() {
    if (next_ == block_.size()) Refill();
    return block_[next_++];
  }
  // Uniform in [0, 1), 53 bits.
  double Uniform();
  // True with probability p (0 <= p <= 1).
  bool Bernoulli(double p);
  // A standard normal value.
  double Gaussian();
  // out[i] = Gaussian() * stddev, for n values.
  void FillGaussian(float* out, size_t n, double stddev);

 private:
  explicit SecureRandom(const Key& key);
  void Refill();

  struct Cipher;
  std::unique_ptr<Cipher> cipher_;
  std::array<uint64_t, 2048> block_{};  // keystream, 16 KiB at a time
  size_t next_ = 2048;
};

}  // namespace fedsilo::privacy

#endif  // FEDSILO_PRIVACY_SECURE_RANDOM_H_
