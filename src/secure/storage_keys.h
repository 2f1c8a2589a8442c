// Encryption at rest: storage key rings and the AEAD file sealer.
//
// A key ring is a small YAML file, readable by its owner only (mode 0600):
//
//   version: 1
//   current: k-20261128-3fa9c2e1   # new files are sealed with this key
//   keys:
//     k-20261128-3fa9c2e1: <base64 of 32 random bytes>
//     k-20261101-77d0a1b4: <...>   # older keys still open older files
//
// A sealed file is
//   "FSEAL" | u8 format version (2) | u8 key id length | key id |
//   24-byte nonce | XChaCha20-Poly1305 ciphertext and tag
// with every byte before the ciphertext, then the name the file is sealed
// under (core/file_seal.h SealedName), as associated data: a changed header,
// a flipped byte, a wrong key or a file moved into another's place fails
// authentication as a whole. Format 1 bound no name; such files open only to
// be re-sealed (ReencryptTree).
//
// Processes find their key ring in --storage-keys or FEDSILO_STORAGE_KEYS (a
// path), or take one key from FEDSILO_STORAGE_KEY (base64; its id is derived
// from the key).
#ifndef FEDSILO_SECURE_STORAGE_KEYS_H_
#define FEDSILO_SECURE_STORAGE_KEYS_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/file_seal.h"
#include "core/status.h"
#include "secure/secagg_crypto.h"

namespace fedsilo::secure {

inline constexpr uint8_t kSealedFormatVersion = 2;
inline constexpr char kStorageKeysEnv[] = "FEDSILO_STORAGE_KEYS";
inline constexpr char kStorageKeyEnv[] = "FEDSILO_STORAGE_KEY";

struct KeyRing {
  std::string current;                // id of the key new files are sealed with
  std::map<std::string, Key32> keys;  // id -> key
};

// A ring with one fresh key, current.
KeyRing NewKeyRing();
// Adds a fresh key and makes it current; returns its id.
std::string AddKey(KeyRing& ring);

// InvalidArgument naming the file and key for a malformed ring;
// also when others may read it.
StatusOr<KeyRing> LoadKeyRing(const std::string& path);
// Writes atomically with mode 0600.
Status SaveKeyRing(const KeyRing& ring, const std::string& path);

// The ring of `flag_path` if set, else of the environment (see above);
// nullopt when none is configured.
StatusOr<std::optional<KeyRing>> ConfiguredKeyRing(const std::string& flag_path);

struct SealedHeader {
  uint8_t version = 0;
  std::string key_id;
  size_t size = 0;  // bytes before the ciphertext
};

class AeadFileSealer : public FileSealer {
 public:
  explicit AeadFileSealer(KeyRing ring) : ring_(std::move(ring)) {}
  std::string Seal(absl::string_view plaintext, absl::string_view name) const override;
  // Refuses format 1 (no name bound), naming the command that re-seals it.
  StatusOr<std::string> Open(absl::string_view sealed, absl::string_view name,
                             absl::string_view source) const override;
  // Opens format 1 too; only to re-seal.
  StatusOr<std::string> OpenAnyVersion(absl::string_view sealed, absl::string_view name,
                                       absl::string_view source) const;
  // A sealed file's header (InvalidArgument if it has none).
  static StatusOr<SealedHeader> HeaderOf(absl::string_view sealed, absl::string_view source);
  static StatusOr<std::string> KeyIdOf(absl::string_view sealed, absl::string_view source);
  const KeyRing& ring() const { return ring_; }

 private:
  KeyRing ring_;
};

struct ReencryptStats {
  int reencrypted = 0;  // sealed files now under the current key
  int current = 0;      // already under it
  int plain = 0;        // not sealed (left as they are unless `seal_plain`)
  std::vector<std::string> newly_sealed;  // with `seal_plain`: the plain files sealed
};

// Re-seals every sealed file under `dir` (recursively) with the ring's current
// key and format, atomically file by file; with `seal_plain`, also seals the
// plain ones of the kinds kept sealed (core/file_seal.h ProtectionOf: models,
// ledgers, summaries, job files; metrics and audit logs line by line). A file
// that does not open stops the walk with an error naming it; the files
// already re-sealed stay readable with the ring. A folder that holds files
// sealed in the current format and also plain (with `seal_plain`) or
// older-format ones is refused, naming them, before anything changes, unless
// `force`: such a file may have been put there to be sealed as genuine.
StatusOr<ReencryptStats> ReencryptTree(const std::string& dir, const KeyRing& ring,
                                       bool seal_plain, bool force = false);

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_STORAGE_KEYS_H_
