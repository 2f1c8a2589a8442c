// Encryption at rest, as seen by the code that writes files: models,
// checkpoints, ledgers, run summaries and the like go through
// WriteProtectedFile() and ReadProtectedFile(). When the process has a
// FileSealer installed (the CLI installs secure::AeadFileSealer when a storage
// key ring is configured), what reaches the disk is sealed; otherwise it is
// written as is.
//
// A sealed file is bound to its name (SealedName: "runs/R/checkpoints/
// round-0007.fsm", "privacy-ledger.json"), so one sealed file put in another's
// place fails to open. A sealed file starts with kSealedMagic; the rest of its
// format belongs to the sealer (secure/storage_keys.h). Reading a sealed file
// without a sealer, or with one that lacks its key, is an error naming the
// file; so is a plain file where a sealer is installed. Nothing partially
// decrypted is ever returned.
#ifndef FEDSILO_CORE_FILE_SEAL_H_
#define FEDSILO_CORE_FILE_SEAL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo {

inline constexpr absl::string_view kSealedMagic = "FSEAL";

class FileSealer {
 public:
  virtual ~FileSealer() = default;
  // The sealed form of `plaintext`, starting with kSealedMagic and bound to
  // `name`.
  virtual std::string Seal(absl::string_view plaintext, absl::string_view name) const = 0;
  // The plaintext of bytes sealed under `name`. Errors name `source` (a path)
  // and say whether the key is missing or the bytes were altered or belong
  // to another file.
  virtual StatusOr<std::string> Open(absl::string_view sealed, absl::string_view name,
                                     absl::string_view source) const = 0;
};

// Installs the process-wide sealer (null turns sealing off). Thread-safe.
void SetFileSealer(std::shared_ptr<const FileSealer> sealer);
std::shared_ptr<const FileSealer> GetFileSealer();

bool IsSealed(absl::string_view bytes);

// The name a file is sealed under: for a run's files, their path from the
// "runs" folder (runs/R/final_model.fsm, runs/R/checkpoints/round-0007.fsm);
// for a simulated silo's, from "silos" (silos/a/privacy-ledger.json); for a
// vertical run's part or predictions, from "vertical" (vertical/R/top.fsm,
// silos/a/vertical/R/top.fsm) or from "runs" (runs/R/parties/a/top.fsm);
// else from a "models" or "checkpoints" folder, else the file name
// (privacy-ledger.json). Computed from the absolute path, without following
// links. Moving a state folder keeps its files readable; putting one file in
// another's place does not.
std::string SealedName(absl::string_view path);

// How a file in a run or state folder is kept at rest, by its name: whole
// (models *.fsm, final_model.pt, models/*.pt, privacy-ledger.json,
// summary.json, job.yaml, a vertical run's predictions.csv), one record per line (metrics.jsonl,
// audit.log), or not at all (everything else).
enum class Protection { kNone, kWhole, kLines };
Protection ProtectionOf(absl::string_view path);

// One record of a line-kept file, sealed under `name` when a sealer is
// installed: {"sealed":"<base64>"}; else `text` as is. No newline.
std::string SealLine(absl::string_view text, absl::string_view name);
// The sealed bytes a line-kept record holds ({"sealed":"<base64>"}), nullopt
// for a plain line; DataLoss naming `source` for a damaged one.
StatusOr<std::optional<std::string>> SealedBytesOfLine(absl::string_view line,
                                                       absl::string_view source);
// The line that holds `sealed` bytes. No newline.
std::string LineOfSealedBytes(absl::string_view sealed);
// The record of such a line; the same errors as OpenProtectedBytes.
StatusOr<std::string> OpenLine(absl::string_view line, absl::string_view name,
                               absl::string_view source);
// The name the `index`-th line (from 1) of a line-kept file is sealed under,
// so that lines cannot be reordered or moved between files unnoticed.
std::string SealedLineName(absl::string_view path, int64_t index);

// Reads a file that may be the user's own (plain) or one fedsilo kept
// (sealed): sealed bytes are opened as ReadProtectedFile opens them, plain
// ones returned as they are even with a sealer installed. For TorchScript
// modules, which are both, and whose kept copies are checked by digest.
StatusOr<std::string> ReadFileOpeningSealed(const std::string& path);

// Writes as WriteFileAtomically (atomic, durable, private), sealed when a
// sealer is installed.
Status WriteProtectedFile(const std::string& path, absl::string_view contents);
// Reads a file written by WriteProtectedFile. A sealed file without a sealer,
// or a plain one with a sealer, is InvalidArgument naming the file.
StatusOr<std::string> ReadProtectedFile(const std::string& path);
// The same for bytes sealed under `name`, read from `source`.
StatusOr<std::string> OpenProtectedBytes(std::string bytes, absl::string_view name,
                                         absl::string_view source);
// `contents` sealed under `name` when a sealer is installed, else as is. For
// records kept one per line (metrics, audit entries).
std::string SealProtectedBytes(absl::string_view contents, absl::string_view name);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_FILE_SEAL_H_
