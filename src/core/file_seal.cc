#include "core/file_seal.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
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

namespace {

// The files a run folder (runs/<id>/) holds itself, besides checkpoints/.
bool IsRunFile(const std::string& file) {
  return absl::StartsWith(file, "final_model.") || file == "summary.json" || file == "job.yaml" ||
         file == "metrics.jsonl";
}

}  // namespace

std::string SealedName(absl::string_view path) {
  // Absolute, so that "./final_model.fsm" run in runs/R names the same file
  // as runs/R/final_model.fsm; no file system lookups (links stay as given).
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(std::string(path), ec);
  if (ec) p = std::string(path);
  p = p.lexically_normal();
  std::vector<std::string> parts;
  for (const auto& part : p) {
    if (!part.empty() && part != "/") parts.push_back(part.string());
  }
  if (parts.empty()) return std::string(path);
  const size_t n = parts.size();
  const std::string& file = parts[n - 1];
  // A run's file: runs/<id>/<file> or runs/<id>/checkpoints/<file>.
  if (n >= 3 && parts[n - 3] == "runs" && IsRunFile(file)) {
    return absl::StrJoin(parts.end() - 3, parts.end(), "/");
  }
  if (n >= 4 && parts[n - 4] == "runs" && parts[n - 2] == "checkpoints") {
    return absl::StrJoin(parts.end() - 4, parts.end(), "/");
  }
  // A vertical run's part or predictions, bound to the run: in a silo's
  // state (vertical/<run>/), a simulated silo's (silos/<name>/vertical/
  // <run>/) or a simulated run's (runs/<id>/parties/<party>/).
  if (n >= 5 && parts[n - 5] == "runs" && parts[n - 3] == "parties") {
    return absl::StrJoin(parts.end() - 5, parts.end(), "/");
  }
  if (n >= 3 && parts[n - 3] == "vertical") {
    const size_t from = n >= 5 && parts[n - 5] == "silos" ? n - 5 : n - 3;
    return absl::StrJoin(parts.begin() + static_cast<std::ptrdiff_t>(from), parts.end(), "/");
  }
  // A simulated silo's state (silos/<name>/): bound to the silo, since every
  // silo of a simulation shares one key ring.
  if (n >= 3 && parts[n - 3] == "silos") return absl::StrJoin(parts.end() - 3, parts.end(), "/");
  if (n >= 2 && (parts[n - 2] == "models" || parts[n - 2] == "checkpoints")) {
    return absl::StrCat(parts[n - 2], "/", file);
  }
  return file;
}

Protection ProtectionOf(absl::string_view path) {
  const std::filesystem::path p{std::string(path)};
  const std::string file = p.filename().string();
  const std::string ext = p.extension().string();
  if (ext == ".fsm" || file == "privacy-ledger.json" || file == "summary.json" ||
      file == "job.yaml") {
    return Protection::kWhole;
  }
  // TorchScript files fedsilo keeps: a run's final model, shipped modules.
  if (ext == ".pt" && (file == "final_model.pt" || p.parent_path().filename() == "models")) {
    return Protection::kWhole;
  }
  // A vertical run's predictions, at its label owner, and a party's
  // TorchScript bottom model (a silo's vertical/<run>/, a simulated run's
  // parties/<party>/).
  const std::string above = p.parent_path().parent_path().filename().string();
  if ((file == "predictions.csv" || file == "bottom.pt") &&
      (above == "vertical" || above == "parties")) {
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
  return LineOfSealedBytes(sealer->Seal(text, name));
}

std::string LineOfSealedBytes(absl::string_view sealed) {
  return absl::StrCat("{\"sealed\":\"", absl::Base64Escape(sealed), "\"}");
}

StatusOr<std::optional<std::string>> SealedBytesOfLine(absl::string_view line,
                                                       absl::string_view source) {
  absl::string_view encoded = line;
  if (!absl::ConsumePrefix(&encoded, "{\"sealed\":\"")) return std::optional<std::string>();
  std::string sealed;
  if (!absl::ConsumeSuffix(&encoded, "\"}") || !absl::Base64Unescape(encoded, &sealed) ||
      !IsSealed(sealed)) {
    return absl::DataLossError(absl::StrCat(source, ": an encrypted line is damaged"));
  }
  return std::optional<std::string>(std::move(sealed));
}

StatusOr<std::string> OpenLine(absl::string_view line, absl::string_view name,
                               absl::string_view source) {
  FEDSILO_ASSIGN_OR_RETURN(std::optional<std::string> sealed, SealedBytesOfLine(line, source));
  // A plain line is allowed without a ring (OpenProtectedBytes refuses it with one).
  return OpenProtectedBytes(sealed.has_value() ? *std::move(sealed) : std::string(line), name,
                            source);
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
        "file where an encrypted one belongs is refused. If it was written before encryption "
        "was turned on, encrypt its folder with `fedsilo keys seal-existing DIR`; if not, "
        "someone put it there"));
  }
  if (sealer == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": the file is encrypted; give its storage key ring (FEDSILO_STORAGE_KEYS or "
                     "--storage-keys)"));
  }
  return sealer->Open(bytes, name, source);
}

StatusOr<std::string> ReadFileOpeningSealed(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (!IsSealed(bytes)) return bytes;
  return OpenProtectedBytes(std::move(bytes), SealedName(path), path);
}

StatusOr<std::string> ReadProtectedFile(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return OpenProtectedBytes(std::move(bytes), SealedName(path), path);
}

}  // namespace fedsilo
