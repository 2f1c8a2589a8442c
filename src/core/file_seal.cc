#include "core/file_seal.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/mutex.h"

namespace fedsilo {
namespace {

// The process's sealer (SetFileSealer), never destroyed.
struct Installed {
  Mutex mu;
  std::shared_ptr<const FileSealer> sealer ABSL_GUARDED_BY(mu);
};
Installed& TheInstalled() {
  static Installed* installed = new Installed();
  return *installed;
}

}  // namespace

void SetFileSealer(std::shared_ptr<const FileSealer> sealer) {
  Installed& i = TheInstalled();
  MutexLock lock(&i.mu);
  i.sealer = std::move(sealer);
}

std::shared_ptr<const FileSealer> GetFileSealer() {
  Installed& i = TheInstalled();
  MutexLock lock(&i.mu);
  return i.sealer;
}

bool IsSealed(absl::string_view bytes) { return absl::StartsWith(bytes, kSealedMagic); }

Status WriteProtectedFile(const std::string& path, absl::string_view contents, bool durable) {
  const std::shared_ptr<const FileSealer> sealer = GetFileSealer();
  const auto write = durable ? WriteFileDurably : WriteFileAtomically;
  if (sealer == nullptr) return write(path, contents);
  return write(path, sealer->Seal(contents));
}

StatusOr<std::string> OpenProtectedBytes(std::string bytes, absl::string_view source) {
  if (!IsSealed(bytes)) return bytes;
  const std::shared_ptr<const FileSealer> sealer = GetFileSealer();
  if (sealer == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": the file is encrypted; give its storage key ring (FEDSILO_STORAGE_KEYS or "
                     "--storage-keys)"));
  }
  return sealer->Open(bytes, source);
}

StatusOr<std::string> ReadProtectedFile(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return OpenProtectedBytes(std::move(bytes), path);
}

}  // namespace fedsilo
