// AuditLog: an append-only, hash-chained record of who did what, kept by the
// orchestrator (<state>/audit.log) and by each silo (<state-dir>/audit.log).
//
// One JSON object per line:
//   {"actor": ..., "data": {...}, "event": ..., "prev": <hash of the entry
//    before, 64 zeros for the first>, "seq": 1, "time_ms": ..., "hash": ...}
// where hash = SHA-256(prev + "\n" + the line's JSON without "hash"), in hex,
// keys sorted. Editing, removing or reordering an entry breaks the chain at
// that entry; VerifyAuditLog() finds the first break.
//
// With a storage key ring configured (core/file_seal.h), each entry is sealed
// under the ring's key and bound to its line number ({"sealed":"<base64>"}):
// the chain is then keyed, so whoever can write the file but does not hold
// the ring can neither edit an entry nor rewrite the whole chain consistently;
// entries are private too. Cutting entries off the end leaves a valid,
// shorter chain either way: verify against an anchor (an entry number and its
// hash, kept elsewhere) to catch it.
//
// Model and update digests (ModelDigest) are SHA-256 over the tensors'
// names, dtypes, shapes and bytes, so the orchestrator and a silo compute the
// same digest for the same model.
//
// Thread safety: Append() may be called from any thread.
#ifndef FEDSILO_SECURE_AUDIT_LOG_H_
#define FEDSILO_SECURE_AUDIT_LOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "core/model_state.h"
#include "core/mutex.h"
#include "core/status.h"
#include "secure/certificate_authority.h"

namespace fedsilo::secure {

// Hex SHA-256 digests.
std::string ModelDigest(const ModelState& state);
std::string BytesDigest(absl::string_view bytes);

class AuditLog {
 public:
  // Opens (or creates) the log at `path` for appending as `actor` (e.g.
  // "orchestrator 'orch'"). A torn last line (a crash mid-write) is cut off
  // and the cut is recorded as an entry.
  static StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path, std::string actor);
  ~AuditLog();

  // Appends one entry; `data` values are strings. Errors name the file.
  Status Append(absl::string_view event, const std::map<std::string, std::string>& data);
  // Logs a failure to append instead of returning it: auditing must not stop
  // training, but must not be silent either.
  void Record(absl::string_view event, const std::map<std::string, std::string>& data);

  const std::string& path() const { return path_; }
  // Entries in the log (its last sequence number).
  int64_t entries() const;
  // The last entry's number and hash (0 and 64 zeros for an empty log).
  struct Head {
    int64_t seq = 0;
    std::string hash;
  };
  Head head() const;

 private:
  AuditLog(std::string path, std::string actor, int fd, int64_t seq, std::string head)
      : path_(std::move(path)),
        actor_(std::move(actor)),
        fd_(fd),
        seq_(seq),
        head_(std::move(head)) {}

  const std::string path_;
  const std::string actor_;
  mutable Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  int64_t seq_ ABSL_GUARDED_BY(mu_);
  std::string head_ ABSL_GUARDED_BY(mu_);
};

struct AuditVerification {
  int64_t entries = 0;
  std::string head;       // hash of the last entry
  bool keyed = false;     // entries sealed under a storage key
  bool anchored = false;  // checked against an anchor
  std::string actor;      // who wrote the last entry ("silo 'a'")
};

// A log's state as recorded elsewhere: entry `seq` had hash `hash`.
struct AuditAnchor {
  int64_t seq = 0;
  std::string hash;
};
// The last entry of `event` in the log at `path` (nullopt if none, or no
// log), reading sealed entries with the installed sealer. An entry that does
// not open is an error naming its line.
struct AuditEvent {
  int64_t seq = 0;
  std::map<std::string, std::string> data;
};
StatusOr<std::optional<AuditEvent>> LastAuditEvent(const std::string& path,
                                                   absl::string_view event);

// A file that keeps a generation and the audit log's length when it was last
// saved (a privacy ledger, the job store), checked against `log`, where each
// save was recorded as a `saved_event` entry with a "generation": DataLoss
// when the log is shorter than the file says (the log was cut or removed) or
// records a later generation than the file holds (an older copy of the file
// was put back). `what` names the file and `consequence` says what the
// program will not do ("The silo will not run on it").
struct GenerationRecord {
  std::string what;
  int64_t generation = 0;
  int64_t audited_entries = 0;
};
Status CheckAgainstAuditLog(const GenerationRecord& file, const AuditLog& log,
                            absl::string_view saved_event, absl::string_view consequence);

// "SEQ:HASH". InvalidArgument otherwise.
StatusOr<AuditAnchor> ParseAuditAnchor(absl::string_view text);

// Checks every entry's hash and link (and, for sealed entries, their
// authentication under the installed sealer), and that the log reaches every
// anchored entry with the anchored hash. DataLoss naming the file, the line
// and the entry's sequence number at the first break, or the anchor the log
// does not reach (entries cut off) or does not match (the log rewritten).
StatusOr<AuditVerification> VerifyAuditLog(const std::string& path,
                                           const std::vector<AuditAnchor>& anchors = {});

// A participant's audit log head signed with the key of its certificate: an
// anchor someone else keeps (the orchestrator keeps its silos'), which the
// participant cannot take back and nobody else can forge.
struct SignedAuditHead {
  std::string federation;
  std::string participant;
  AuditAnchor head;
  int64_t unix_millis = 0;
  std::string certificate_pem;
  std::string signature;  // DER, by MessageSigner
};
// What is signed: "fedsilo audit head v1", the federation, the participant,
// the entry number, its hash and the time, one per line.
std::string AuditHeadMessage(const SignedAuditHead& head);
// Sets head.signature.
Status SignAuditHead(SignedAuditHead& head, const MessageSigner& signer);
// InvalidArgument for a malformed head (no entry, a hash that is not 64 hex
// digits, no time or one after 2255, oversized fields); PermissionDenied unless its certificate verifies
// with `checker` for a participant of `kind` named head.participant at the
// time it was signed, and the signature is its key's.
Status CheckAuditHead(const SignedAuditHead& head, const SignatureChecker& checker,
                      ParticipantKind kind);
// One JSON object per line, as the orchestrator keeps them
// (<state>/audit-anchors/<silo>.jsonl); `received_unix_millis` is when it came.
std::string AuditHeadLine(const SignedAuditHead& head, int64_t received_unix_millis);
// InvalidArgument naming `source` for a line that is not one.
StatusOr<SignedAuditHead> ParseAuditHeadLine(absl::string_view line, absl::string_view source);

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_AUDIT_LOG_H_
