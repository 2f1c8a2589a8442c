#include "secure/secagg_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sodium.h>

extern "C" {  // the header has no C++ guard
#include <libgfshare.h>
}

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace fedsilo::secure {
namespace {

void FillRandom(unsigned char* buffer, unsigned int size) { randombytes_buf(buffer, size); }

struct GfshareDeleter {
  void operator()(gfshare_ctx* ctx) const { gfshare_ctx_free(ctx); }
};
using GfshareCtx = std::unique_ptr<gfshare_ctx, GfshareDeleter>;

}  // namespace

void InitCrypto() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();  // no usable randomness: nothing is safe
    gfshare_fill_rand = FillRandom;
  });
}

Key32 RandomKey32() {
  InitCrypto();
  Key32 key;
  randombytes_buf(key.data(), key.size());
  return key;
}

KeyPair NewKeyPair() {
  KeyPair pair;
  pair.secret_key = RandomKey32();
  pair.public_key = PublicKeyOf(pair.secret_key);
  return pair;
}

Key32 PublicKeyOf(const Key32& secret_key) {
  InitCrypto();
  Key32 pub;
  crypto_scalarmult_base(pub.data(), secret_key.data());
  return pub;
}

StatusOr<Key32> AgreeKey(const KeyPair& mine, const Key32& their_public_key,
                         absl::string_view context) {
  InitCrypto();
  Key32 shared;
  if (crypto_scalarmult(shared.data(), mine.secret_key.data(), their_public_key.data()) != 0) {
    return absl::InvalidArgumentError("a public key of low order was offered");
  }
  const bool mine_first =
      std::memcmp(mine.public_key.data(), their_public_key.data(), shared.size()) < 0;
  const Key32& first = mine_first ? mine.public_key : their_public_key;
  const Key32& second = mine_first ? their_public_key : mine.public_key;
  crypto_generichash_state state;
  Key32 key;
  crypto_generichash_init(&state, nullptr, 0, key.size());
  crypto_generichash_update(&state, shared.data(), shared.size());
  crypto_generichash_update(&state, first.data(), first.size());
  crypto_generichash_update(&state, second.data(), second.size());
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(context.data()),
                            context.size());
  crypto_generichash_final(&state, key.data(), key.size());
  sodium_memzero(shared.data(), shared.size());
  return key;
}

Key32 Commit(const Key32& key, absl::string_view context) {
  InitCrypto();
  Key32 out;
  crypto_generichash(out.data(), out.size(), key.data(), key.size(),
                     reinterpret_cast<const unsigned char*>(context.data()),
                     std::min<size_t>(context.size(), crypto_generichash_KEYBYTES_MAX));
  return out;
}

std::string Seal(const Key32& key, absl::string_view plaintext, absl::string_view associated) {
  InitCrypto();
  constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  std::string out(kNonce + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(bytes, kNonce);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      bytes + kNonce, &written, reinterpret_cast<const unsigned char*>(plaintext.data()),
      plaintext.size(), reinterpret_cast<const unsigned char*>(associated.data()),
      associated.size(), nullptr, bytes, key.data());
  out.resize(kNonce + written);
  return out;
}

StatusOr<std::string> Open(const Key32& key, absl::string_view sealed,
                           absl::string_view associated) {
  InitCrypto();
  constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  constexpr size_t kTag = crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (sealed.size() < kNonce + kTag) {
    return absl::DataLossError(
        absl::StrCat("sealed data of ", sealed.size(), " bytes is too short"));
  }
  std::string out(sealed.size() - kNonce - kTag, '\0');
  unsigned long long written = 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(out.data()), &written, nullptr, bytes + kNonce,
          sealed.size() - kNonce, reinterpret_cast<const unsigned char*>(associated.data()),
          associated.size(), bytes, key.data()) != 0) {
    sodium_memzero(out.data(), out.size());
    return absl::DataLossError("authentication failed (wrong key, or the data was altered)");
  }
  out.resize(written);
  return out;
}

void AddMask(const Key32& seed, absl::Span<uint32_t> values, bool subtract) {
  // AES-256-CTR from a zero IV: each seed is used for one stream only (keys
  // are fresh every round). With AES-NI it runs at several GB/s, about three
  // times libsodium's ChaCha20, and masking is most of a silo's extra work.
  constexpr size_t kBlockValues = 4096;  // 16 KiB of key stream at a time
  static const std::array<unsigned char, kBlockValues * 4> kZeros{};
  std::array<uint32_t, kBlockValues> stream;
  const unsigned char iv[16] = {};
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ctr(), nullptr, seed.data(), iv) != 1) {
    std::abort();  // out of memory: no mask is better than a wrong one
  }
  for (size_t at = 0; at < values.size(); at += kBlockValues) {
    const size_t n = std::min(kBlockValues, values.size() - at);
    int written = 0;
    if (EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(stream.data()), &written,
                          kZeros.data(), static_cast<int>(n * 4)) != 1) {
      std::abort();
    }
    uint32_t* out = values.data() + at;
    if (subtract) {
      for (size_t i = 0; i < n; ++i) out[i] -= stream[i];
    } else {
      for (size_t i = 0; i < n; ++i) out[i] += stream[i];
    }
  }
  OPENSSL_cleanse(stream.data(), sizeof(stream));
}

std::vector<Key32> ShamirSplit(const Key32& secret, int count, int threshold) {
  InitCrypto();
  std::vector<unsigned char> numbers(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i)
    numbers[static_cast<size_t>(i)] = static_cast<unsigned char>(i + 1);
  GfshareCtx ctx(gfshare_ctx_init_enc(numbers.data(), static_cast<unsigned int>(count),
                                      static_cast<unsigned char>(threshold), secret.size()));
  if (ctx == nullptr) std::abort();  // only on out-of-memory or a broken REQUIRES
  Key32 copy = secret;
  gfshare_ctx_enc_setsecret(ctx.get(), copy.data());
  sodium_memzero(copy.data(), copy.size());
  std::vector<Key32> shares(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    gfshare_ctx_enc_getshare(ctx.get(), static_cast<unsigned char>(i),
                             shares[static_cast<size_t>(i)].data());
  }
  return shares;
}

Key32 ShamirCombine(const std::vector<std::pair<uint8_t, Key32>>& shares) {
  InitCrypto();
  std::vector<unsigned char> numbers;
  for (const auto& [number, share] : shares) numbers.push_back(number);
  Key32 secret{};
  if (numbers.empty()) return secret;
  GfshareCtx ctx(gfshare_ctx_init_dec(numbers.data(), static_cast<unsigned int>(numbers.size()),
                                      secret.size()));
  if (ctx == nullptr) std::abort();
  for (size_t i = 0; i < shares.size(); ++i) {
    Key32 share = shares[i].second;
    gfshare_ctx_dec_giveshare(ctx.get(), static_cast<unsigned char>(i), share.data());
  }
  gfshare_ctx_dec_extract(ctx.get(), secret.data());
  return secret;
}

std::string ToBytes(const Key32& key) {
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

StatusOr<Key32> ToKey32(absl::string_view bytes, absl::string_view what) {
  Key32 key;
  if (bytes.size() != key.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", bytes.size(), " bytes, not ", key.size()));
  }
  std::memcpy(key.data(), bytes.data(), key.size());
  return key;
}

}  // namespace fedsilo::secure
