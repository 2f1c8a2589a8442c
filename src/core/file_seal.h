// Encryption at rest, as seen by the code that writes files: model files,
// checkpoints and privacy ledgers go through WriteProtectedFile() and
// ReadProtectedFile(). When the process has a FileSealer installed (the CLI
// installs secure::AeadFileSealer when a storage key ring is configured),
// what reaches the disk is sealed; otherwise it is written as is.
//
// A sealed file starts with kSealedMagic; the rest of its format belongs to
// the sealer (secure/storage_keys.h). Reading a sealed file without a sealer,
// or with one that lacks its key, is an error naming the file; nothing
// partially decrypted is ever returned.
#ifndef FEDSILO_CORE_FILE_SEAL_H_
#define FEDSILO_CORE_FILE_SEAL_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo {

inline constexpr absl::string_view kSealedMagic = "FSEAL";

class FileSealer {
 public:
  virtual ~FileSealer() = default;
  // The sealed form of `plaintext`, starting with kSealedMagic.
  virtual std::string Seal(absl::string_view plaintext) const = 0;
  // The plaintext of sealed bytes. Errors name `source` (a path) and say
  // whether the key is missing or the bytes were altered.
  virtual StatusOr<std::string> Open(absl::string_view sealed, absl::string_view source) const = 0;
};

// Installs the process-wide sealer (null turns sealing off). Thread-safe.
void SetFileSealer(std::shared_ptr<const FileSealer> sealer);
std::shared_ptr<const FileSealer> GetFileSealer();

bool IsSealed(absl::string_view bytes);

// Writes atomically (see WriteFileAtomically), sealed when a sealer is
// installed; with `durable`, as WriteFileDurably.
Status WriteProtectedFile(const std::string& path, absl::string_view contents,
                          bool durable = false);
// Reads a file written by WriteProtectedFile (or a plain one). A sealed file
// without a sealer is FailedPrecondition naming the file.
StatusOr<std::string> ReadProtectedFile(const std::string& path);
// The same for bytes already read from `source`.
StatusOr<std::string> OpenProtectedBytes(std::string bytes, absl::string_view source);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_FILE_SEAL_H_
