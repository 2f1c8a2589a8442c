#include "privacy/secure_random.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fedsilo::privacy {
namespace {

// The ziggurat's 128 layers for the standard normal (Marsaglia and Tsang
// 2000, Section 4): x_k the layers' right edges, with r = x_127 = 3.4426...
// and v the area of each layer (and of the base with its tail).
struct Ziggurat {
  static constexpr double kR = 3.442619855899;
  static constexpr double kV = 9.91256303526217e-3;
  static constexpr double kM = 2147483648.0;  // 2^31
  uint32_t k[128];  // |j| < k[i]: x = j * w[i] is inside layer i's rectangle
  double w[128];
  double f[128];  // exp(-x^2 / 2) at each layer's edge

  Ziggurat() {
    double d = kR, t = kR;
    const double q = kV / std::exp(-0.5 * d * d);
    k[0] = static_cast<uint32_t>((d / q) * kM);
    k[1] = 0;
    w[0] = q / kM;
    w[127] = d / kM;
    f[0] = 1.0;
    f[127] = std::exp(-0.5 * d * d);
    for (int i = 126; i >= 1; --i) {
      d = std::sqrt(-2.0 * std::log(kV / d + std::exp(-0.5 * d * d)));
      k[i + 1] = static_cast<uint32_t>((d / t) * kM);
      t = d;
      f[i] = std::exp(-0.5 * d * d);
      w[i] = d / kM;
    }
  }
};

const Ziggurat& Table() {
  static const Ziggurat table;
  return table;
}

}  // namespace

struct SecureRandom::Cipher {
  EVP_CIPHER_CTX* ctx = nullptr;
  ~Cipher() { EVP_CIPHER_CTX_free(ctx); }
};

SecureRandom::SecureRandom() {
  Key key;
  if (RAND_priv_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    // Noise that others could predict would void every privacy guarantee.
    std::fprintf(stderr, "fedsilo: fatal: the operating system gave no randomness for DP noise\n");
    std::abort();
  }
  *this = SecureRandom(key);
  OPENSSL_cleanse(key.data(), key.size());
}

SecureRandom::SecureRandom(const Key& key) : cipher_(std::make_unique<Cipher>()) {
  cipher_->ctx = EVP_CIPHER_CTX_new();
  const uint8_t iv[16] = {0};
  if (cipher_->ctx == nullptr ||
      EVP_EncryptInit_ex(cipher_->ctx, EVP_aes_256_ctr(), nullptr, key.data(), iv) != 1) {
    std::fprintf(stderr, "fedsilo: fatal: AES-256-CTR is not available for DP noise\n");
    std::abort();
  }
}

SecureRandom SecureRandom::WithKeyForTesting(const Key& key) { return SecureRandom(key); }

SecureRandom::~SecureRandom() {
  // The keystream left in the buffer would let the next draws be read back.
  OPENSSL_cleanse(block_.data(), sizeof(block_));
}

SecureRandom::SecureRandom(SecureRandom&& other) noexcept { *this = std::move(other); }

SecureRandom& SecureRandom::operator=(SecureRandom&& other) noexcept {
  cipher_ = std::move(other.cipher_);
  block_ = other.block_;
  next_ = other.next_;
  OPENSSL_cleanse(other.block_.data(), sizeof(other.block_));
  other.next_ = other.block_.size();
  return *this;
}

void SecureRandom::Refill() {
  // The keystream is AES-256-CTR of zeros: encrypt the buffer in place.
  std::memset(block_.data(), 0, sizeof(block_));
  int len = 0;
  unsigned char* bytes = reinterpret_cast<unsigned char*>(block_.data());
  if (EVP_EncryptUpdate(cipher_->ctx, bytes, &len, bytes, static_cast<int>(sizeof(block_))) != 1 ||
      len != static_cast<int>(sizeof(block_))) {
    std::fprintf(stderr, "fedsilo: fatal: AES-256-CTR failed while drawing DP noise\n");
    std::abort();
  }
  next_ = 0;
}

double SecureRandom::Uniform() { return static_cast<double>(Next64() >> 11) * 0x1.0p-53; }

bool SecureRandom::Bernoulli(double p) { return Uniform() < p; }

double SecureRandom::Gaussian() {
  const Ziggurat& z = Table();
  for (;;) {
    // 32 bits for the value and 7 other bits for the layer, so the two are
    // independent.
    const uint64_t bits = Next64();
    const int32_t j = static_cast<int32_t>(static_cast<uint32_t>(bits));
    const int i = static_cast<int>((bits >> 32) & 127);
    const int64_t magnitude = j < 0 ? -static_cast<int64_t>(j) : j;
    const double x = static_cast<double>(j) * z.w[i];
    if (magnitude < z.k[i]) return x;  // inside the rectangle: most draws
    if (i == 0) {
      // The tail beyond r (Marsaglia 1964).
      double tx, ty;
      do {
        tx = -std::log(1.0 - Uniform()) / Ziggurat::kR;
        ty = -std::log(1.0 - Uniform());
      } while (ty + ty < tx * tx);
      return j > 0 ? Ziggurat::kR + tx : -Ziggurat::kR - tx;
    }
    // The wedge between the rectangle and the curve.
    if (z.f[i] + Uniform() * (z.f[i - 1] - z.f[i]) < std::exp(-0.5 * x * x)) return x;
  }
}

void SecureRandom::FillGaussian(float* out, size_t n, double stddev) {
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(Gaussian() * stddev);
}

}  // namespace fedsilo::privacy
