#include "core/file_seal.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

std::string SealedName(absl::string_view path) {
  const std::filesystem::path p = std::filesystem::path(std::string(path)).lexically_normal();
  std::vector<std::string> parts;
  for (const auto& part : p) parts.push_back(part.string());
  if (parts.empty()) return std::string(path);
  // A run's file: from its "runs" folder on (runs/R/...).
  for (size_t i = parts.size(); i-- > 0;) {
    if (parts[i] == "runs" && i + 2 < parts.size()) {
      return absl::StrJoin(parts.begin() + static_cast<std::ptrdiff_t>(i), parts.end(), "/");
    }
  }
  if (parts.size() >= 2 &&
      (parts[parts.size() - 2] == "models" || parts[parts.size() - 2] == "checkpoints")) {
    return absl::StrCat(parts[parts.size() - 2], "/", parts.back());
  }
  return parts.back();
}

Protection ProtectionOf(absl::string_view path) {
  const std::filesystem::path p{std::string(path)};
  const std::string file = p.filename().string();
  const std::string ext = p.extension().string();
  if (ext == ".fsm" || file == "privacy-ledger.json" || file == "summary.json" ||
      file == "job.yaml") {
    return Protection::kWhole;
  }
  if (file == "metrics.jsonl" || file == "audit.log") return Protection::kLines;
  return Protection::kNone;
}

std::string SealedLineName(absl::string_view path, int64_t index) {
  return absl::StrCat(SealedName(path), " line ", index);
}

std::string SealLine(absl::string_view text, absl::string_view name) {
  const std::shared_ptr<const FileSealer> sealer = GetFileSealer();
  if (sealer == nullptr) return std::string(text);
  return absl::StrCat("{\"sealed\":\"", absl::Base64Escape(sealer->Seal(text, name)), "\"}");
}

StatusOr<std::string> OpenLine(absl::string_view line, absl::string_view name,
                               absl::string_view source) {
  constexpr absl::string_view kPrefix = "{\"sealed\":\"";
  if (!absl::StartsWith(line, kPrefix)) {
    return OpenProtectedBytes(std::string(line), name, source);  // plain: allowed without a ring
  }
  absl::string_view encoded = line.substr(kPrefix.size());
  std::string sealed;
  if (!absl::ConsumeSuffix(&encoded, "\"}") || !absl::Base64Unescape(encoded, &sealed) ||
      !IsSealed(sealed)) {
    return absl::DataLossError(absl::StrCat(source, ": an encrypted line is damaged"));
  }
  return OpenProtectedBytes(std::move(sealed), name, source);
}

Status WriteProtectedFile(const std::string& path, absl::string_view contents) {
  return WriteFileAtomically(path, SealProtectedBytes(contents, SealedName(path)));
}

std::string SealProtectedBytes(absl::string_view contents, absl::string_view name) {
  const std::shared_ptr<const FileSealer> sealer = GetFileSealer();
  if (sealer == nullptr) return std::string(contents);
  return sealer->Seal(contents, name);
}

StatusOr<std::string> OpenProtectedBytes(std::string bytes, absl::string_view name,
                                         absl::string_view source) {
  const std::shared_ptr<const FileSealer> sealer = GetFileSealer();
  if (!IsSealed(bytes)) {
    if (sealer == nullptr) return bytes;
    return absl::InvalidArgumentError(absl::StrCat(
        source,
        ": is not encrypted, but a storage key ring is configured, so it should be; a plain "
        "file where an encrypted one belongs is refused (if it was written before encryption "
        "was turned on, encrypt the folder with `fedsilo keys seal-existing DIR`)"));
  }
  if (sealer == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": the file is encrypted; give its storage key ring (FEDSILO_STORAGE_KEYS or "
                     "--storage-keys)"));
  }
  return sealer->Open(bytes, name, source);
}

StatusOr<std::string> ReadProtectedFile(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return OpenProtectedBytes(std::move(bytes), SealedName(path), path);
}

}  // namespace fedsilo
