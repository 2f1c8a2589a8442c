// The cryptographic building blocks of secure aggregation, from libsodium
// (X25519, BLAKE2b, XChaCha20-Poly1305), OpenSSL (AES-256-CTR as the mask
// generator) and libgfshare (Shamir secret sharing over GF(2^8)). Nothing here is hand-written
// cryptography: these are thin, typed wrappers.
//
// Thread safety: every function is thread-safe.
#ifndef FEDSILO_SECURE_SECAGG_CRYPTO_H_
#define FEDSILO_SECURE_SECAGG_CRYPTO_H_

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/status.h"

namespace fedsilo::secure {

using Key32 = std::array<uint8_t, 32>;

struct KeyPair {
  Key32 public_key{};
  Key32 secret_key{};
};

// Initialises libsodium and points libgfshare at its random generator. Called
// by every function below; cheap after the first call.
void InitCrypto();

Key32 RandomKey32();
KeyPair NewKeyPair();  // X25519
Key32 PublicKeyOf(const Key32& secret_key);

// A key both ends derive: BLAKE2b-256 over the X25519 shared secret, both
// public keys (in a fixed order) and `context`. InvalidArgument for a public
// key of low order (the shared secret would be predictable).
StatusOr<Key32> AgreeKey(const KeyPair& mine, const Key32& their_public_key,
                         absl::string_view context);

// BLAKE2b-256 of `key` under `context`: a commitment to a random key.
Key32 Commit(const Key32& key, absl::string_view context);

// XChaCha20-Poly1305 with a random nonce (stored first). Open() fails with
// DataLoss when the ciphertext, the associated data or the key is wrong.
std::string Seal(const Key32& key, absl::string_view plaintext, absl::string_view associated);
StatusOr<std::string> Open(const Key32& key, absl::string_view sealed,
                           absl::string_view associated);

// Adds (or subtracts) the AES-256-CTR key stream of `seed`, read as uint32
// values, to `values`, mod 2^32. The same seed always gives the same stream.
void AddMask(const Key32& seed, absl::Span<uint32_t> values, bool subtract);

// Shamir shares of `secret` for share numbers 1..count, any `threshold` of
// which recover it. REQUIRES: 2 <= threshold <= count <= 255.
std::vector<Key32> ShamirSplit(const Key32& secret, int count, int threshold);
// Recovers a secret from (share number, share) pairs. Fewer shares than the
// threshold give a wrong secret, not an error: callers check a commitment.
Key32 ShamirCombine(const std::vector<std::pair<uint8_t, Key32>>& shares);

// Key32 <-> bytes.
std::string ToBytes(const Key32& key);
StatusOr<Key32> ToKey32(absl::string_view bytes, absl::string_view what);

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_SECAGG_CRYPTO_H_
