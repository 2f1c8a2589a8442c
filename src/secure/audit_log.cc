#include "secure/audit_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/mutex.h"

namespace fedsilo::secure {
namespace {

const std::string kGenesis(64, '0');

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) std::abort();
  }
  void Update(const void* data, size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
  void Update(absl::string_view s) { Update(s.data(), s.size()); }
  std::string HexDigest() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_.get(), out, &size);
    std::string hex(2 * size + 1, '\0');
    sodium_bin2hex(hex.data(), hex.size(), out, size);
    hex.pop_back();
    return hex;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

std::string EntryHash(const std::string& prev, const std::string& body) {
  Sha256 h;
  h.Update(prev);
  h.Update("\n");
  h.Update(body);
  return h.HexDigest();
}

int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string ModelDigest(const ModelState& state) {
  Sha256 h;
  for (const Tensor& t : state.tensors()) {
    const uint64_t name_size = t.name().size();
    h.Update(&name_size, sizeof(name_size));
    h.Update(t.name());
    const uint8_t dtype = static_cast<uint8_t>(t.dtype());
    h.Update(&dtype, 1);
    const uint64_t rank = t.shape().size();
    h.Update(&rank, sizeof(rank));
    h.Update(t.shape().data(), t.shape().size() * sizeof(int64_t));
    h.Update(t.data(), t.num_bytes());
  }
  return h.HexDigest();
}

std::string BytesDigest(absl::string_view bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.HexDigest();
}

StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path, std::string actor) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0 || ::fchmod(fd, 0600) != 0) {
    if (fd >= 0) ::close(fd);
    return absl::InternalError(
        absl::StrCat(path, ": cannot open the audit log: ", std::strerror(errno)));
  }
  // One writer per log, before the last line is read (or a torn one cut):
  // each writer chains from the head it read, so a second one would fork the
  // chain and the log would no longer verify. A silo's state folder has no
  // other lock. The lock goes with the descriptor, also when a process dies.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": the audit log is in use by another process (or opened twice): ",
        err == EWOULDBLOCK ? "it is locked" : std::strerror(err)));
  }
  // Closes `fd` on every return below that does not hand it to the log.
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  int64_t seq = 0;
  std::string head = kGenesis;
  int64_t cut = -1;  // bytes of a torn last line
  StatusOr<std::string> existing = ReadFile(path);
  if (existing.ok() && !existing->empty()) {
    const std::string& text = *existing;
    size_t end = text.size();
    if (text.back() != '\n') {
      const size_t last_newline = text.rfind('\n');
      end = last_newline == std::string::npos ? 0 : last_newline + 1;
      cut = static_cast<int64_t>(text.size() - end);
      if (::truncate(path.c_str(), static_cast<off_t>(end)) != 0) {
        return absl::InternalError(
            absl::StrCat(path, ": cannot cut a torn last entry: ", std::strerror(errno)));
      }
    }
    if (end > 0) {
      const absl::string_view kept(text.data(), end - 1);  // without the final newline
      const size_t start = kept.rfind('\n');
      const absl::string_view last =
          start == absl::string_view::npos ? kept : kept.substr(start + 1);
      const int64_t line_number =
          static_cast<int64_t>(std::count(kept.begin(), kept.end(), '\n')) + 1;
      // Sealed under the storage key ring when one is configured.
      FEDSILO_ASSIGN_OR_RETURN(std::string entry,
                               OpenLine(last, SealedLineName(path, line_number),
                                        absl::StrCat(path, ":", line_number)));
      nlohmann::json j = nlohmann::json::parse(entry, nullptr, false);
      if (j.is_discarded() || !j.contains("hash") || !j.contains("seq") ||
          !j["hash"].is_string() || j["seq"] != line_number) {
        return absl::DataLossError(absl::StrCat(
            path, ": the last entry is not an audit entry; run `fedsilo audit verify ", path, "`"));
      }
      head = j["hash"].get<std::string>();
      seq = j["seq"].get<int64_t>();
    }
  } else if (!existing.ok() && !absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  std::move(close_fd).Cancel();  // the log closes it
  std::unique_ptr<AuditLog> log(new AuditLog(path, std::move(actor), fd, seq, head));
  if (cut >= 0) {
    FEDSILO_RETURN_IF_ERROR(
        log->Append("audit_log_repaired", {{"torn_bytes_removed", std::to_string(cut)}}));
  }
  return log;
}

AuditLog::~AuditLog() {
  MutexLock lock(&mu_);
  ::close(fd_);
}

Status AuditLog::Append(absl::string_view event, const std::map<std::string, std::string>& data) {
  MutexLock lock(&mu_);
  nlohmann::json entry = {{"seq", seq_ + 1}, {"time_ms", NowMillis()},
                          {"actor", actor_}, {"event", std::string(event)},
                          {"data", data},    {"prev", head_}};
  const std::string body = entry.dump();
  const std::string hash = EntryHash(head_, body);
  entry["hash"] = hash;
  // With a storage key ring the entry is sealed, bound to its line: the ring's
  // key is then the chain's key, and entries are kept private.
  const std::string line =
      SealLine(entry.dump(), SealedLineName(path_, seq_ + 1)) + "\n";
  // One write with O_APPEND: entries from several threads never interleave.
  // A short write (a full disk) is cut off again, so that the next entry
  // does not land on half of this one.
  struct stat before {};
  const bool sized = ::fstat(fd_, &before) == 0;
  const ssize_t written = ::write(fd_, line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size())) {
    const int err = written < 0 ? errno : ENOSPC;
    if (written > 0 && sized) (void)::ftruncate(fd_, before.st_size);
    return absl::InternalError(
        absl::StrCat(path_, ": cannot append to the audit log: ", std::strerror(err)));
  }
  ++seq_;
  head_ = hash;
  return absl::OkStatus();
}

int64_t AuditLog::entries() const {
  MutexLock lock(&mu_);
  return seq_;
}

AuditLog::Head AuditLog::head() const {
  MutexLock lock(&mu_);
  return {seq_, head_};
}

void AuditLog::Record(absl::string_view event, const std::map<std::string, std::string>& data) {
  Status s = Append(event, data);
  if (!s.ok()) spdlog::error("audit: {}", std::string(s.message()));
}

StatusOr<AuditVerification> VerifyAuditLog(const std::string& path,
                                           const std::vector<AuditAnchor>& anchors) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  AuditVerification v;
  v.head = kGenesis;
  int line_number = 0;
  std::map<int64_t, std::string> hashes;  // of the anchored entries
  for (const AuditAnchor& a : anchors) hashes[a.seq];
  const std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    ++line_number;
    if (line.empty() && i + 1 == lines.size()) break;  // after the last newline
    auto broken = [&](absl::string_view why) {
      return absl::DataLossError(absl::StrCat(path, ":", line_number, ": entry ", v.entries + 1,
                                              " ", why, "; the ", v.entries,
                                              " entries before it are intact"));
    };
    if (line.empty()) return broken("is an empty line");
    const bool sealed = absl::StartsWith(line, "{\"sealed\":");
    StatusOr<std::string> entry =
        OpenLine(line, SealedLineName(path, line_number), absl::StrCat(path, ":", line_number));
    if (!entry.ok()) {
      if (absl::IsDataLoss(entry.status())) {
        return broken(
            "fails authentication under the storage key (it was altered, or moved from another "
            "line or log)");
      }
      return entry.status();  // no key ring, or a plain entry where sealed ones belong
    }
    if (v.entries == 0) v.keyed = sealed;
    if (sealed != v.keyed) return broken(sealed ? "is encrypted, unlike the ones before it"
                                                : "is not encrypted, unlike the ones before it");
    nlohmann::json j = nlohmann::json::parse(*entry, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("hash") || !j["hash"].is_string() ||
        !j.contains("prev") || !j.contains("seq")) {
      return broken("is not an audit entry");
    }
    const std::string hash = j["hash"].get<std::string>();
    j.erase("hash");
    if (j["prev"] != v.head) {
      return broken("does not follow the entry before it (an entry was removed or reordered)");
    }
    if (j["seq"] != v.entries + 1) return broken("has the wrong sequence number");
    if (EntryHash(v.head, j.dump()) != hash) {
      return broken("was altered: its hash does not match its contents");
    }
    v.head = hash;
    ++v.entries;
    if (j.contains("actor") && j["actor"].is_string()) v.actor = j["actor"].get<std::string>();
    if (auto it = hashes.find(v.entries); it != hashes.end()) it->second = hash;
  }
  if (!text.empty() && text.back() != '\n') {
    return absl::DataLossError(absl::StrCat(path, ":", line_number, ": the last entry is torn"));
  }
  // The earliest anchor that fails is the first sign of what happened.
  std::vector<AuditAnchor> sorted = anchors;
  std::sort(sorted.begin(), sorted.end(),
            [](const AuditAnchor& a, const AuditAnchor& b) { return a.seq < b.seq; });
  for (const AuditAnchor& anchor : sorted) {
    if (anchor.seq > v.entries) {
      return absl::DataLossError(absl::StrCat(
          path, ": ends at entry ", v.entries, ", but the anchor records entry ", anchor.seq,
          " (hash ", anchor.hash, "): entries were cut off the end"));
    }
    const std::string& found = hashes.at(anchor.seq);
    if (found != anchor.hash) {
      return absl::DataLossError(absl::StrCat(
          path, ": entry ", anchor.seq, " has hash ", found, ", but the anchor records ",
          anchor.hash, ": the log was rewritten up to that entry"));
    }
  }
  v.anchored = !anchors.empty();
  return v;
}

StatusOr<std::optional<AuditEvent>> LastAuditEvent(const std::string& path,
                                                   absl::string_view event) {
  StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) return std::optional<AuditEvent>();
  if (!text.ok()) return text.status();
  const std::vector<absl::string_view> lines = absl::StrSplit(*text, '\n');
  for (size_t i = lines.size(); i-- > 0;) {
    if (lines[i].empty() && i + 1 == lines.size()) continue;  // after the last newline
    const int64_t line_number = static_cast<int64_t>(i) + 1;
    const std::string source = absl::StrCat(path, ":", line_number);
    StatusOr<std::string> entry = OpenLine(lines[i], SealedLineName(path, line_number), source);
    if (!entry.ok()) {
      return Status(entry.status().code(),
                    absl::StrCat(entry.status().message(), " (check the log with `fedsilo audit "
                                                           "verify ", path, "`)"));
    }
    nlohmann::json j = nlohmann::json::parse(*entry, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("event") || !j.contains("seq") ||
        !j.contains("data") || !j["data"].is_object()) {
      return absl::DataLossError(absl::StrCat(source, ": not an audit entry; run `fedsilo audit "
                                                      "verify ", path, "`"));
    }
    if (!j["event"].is_string() || j["event"].get<std::string>() != event) continue;
    AuditEvent found;
    found.seq = j["seq"].get<int64_t>();
    for (const auto& [key, value] : j["data"].items()) {
      if (value.is_string()) found.data[key] = value.get<std::string>();
    }
    return std::optional<AuditEvent>(std::move(found));
  }
  return std::optional<AuditEvent>();
}

StatusOr<AuditAnchor> ParseAuditAnchor(absl::string_view text) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  AuditAnchor a;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &a.seq) || a.seq < 1 ||
      parts[1].size() != 64 || parts[1].find_first_not_of("0123456789abcdef") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--anchor '", text, "': expected ENTRY:HASH, e.g. 231:<64 hex digits> (as `fedsilo audit "
        "verify` prints them)"));
  }
  a.hash = std::string(parts[1]);
  return a;
}

Status CheckAgainstAuditLog(const GenerationRecord& file, const AuditLog& log,
                            absl::string_view saved_event, absl::string_view consequence) {
  if (file.audited_entries > log.entries()) {
    return absl::DataLossError(absl::StrCat(
        log.path(), ": ", log.entries(), " entries, but ", file.what,
        " was saved when the log had ", file.audited_entries, ": the log was cut back or removed. ",
        consequence, ": restore the log"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::optional<AuditEvent> saved, LastAuditEvent(log.path(), saved_event));
  if (!saved.has_value()) return absl::OkStatus();
  int64_t recorded = 0;
  auto it = saved->data.find("generation");
  if (it == saved->data.end() || !absl::SimpleAtoi(it->second, &recorded)) {
    return absl::DataLossError(absl::StrCat(log.path(), ": entry ", saved->seq, " (", saved_event,
                                            ") has no generation"));
  }
  if (file.generation < recorded) {
    return absl::DataLossError(absl::StrCat(
        file.what, ": generation ", file.generation, ", but the audit log (", log.path(),
        " entry ", saved->seq, ") recorded generation ", recorded,
        ": an older copy was put back. ", consequence, ": restore the newest copy"));
  }
  return absl::OkStatus();
}

namespace {

bool IsHexHash(absl::string_view h) {
  return h.size() == 64 &&
         std::all_of(h.begin(), h.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

std::string AuditHeadMessage(const SignedAuditHead& h) {
  return absl::StrCat("fedsilo audit head v1\n", h.federation, "\n", h.participant, "\n",
                      h.head.seq, "\n", h.head.hash, "\n", h.unix_millis, "\n");
}

Status SignAuditHead(SignedAuditHead& h, const MessageSigner& signer) {
  FEDSILO_ASSIGN_OR_RETURN(h.signature, signer.Sign(AuditHeadMessage(h)));
  return absl::OkStatus();
}

Status CheckAuditHead(const SignedAuditHead& h, const SignatureChecker& checker,
                      ParticipantKind kind) {
  // The latest time the clock's nanoseconds hold (in 2262) is far off; a
  // head of a later time would overflow them.
  constexpr int64_t kLatestUnixMillis = 9'000'000'000'000;  // in 2255
  if (h.head.seq < 1 || !IsHexHash(h.head.hash) || h.unix_millis <= 0 ||
      h.unix_millis > kLatestUnixMillis ||
      h.certificate_pem.size() > 16384 || h.signature.size() > 512 || h.federation.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the audit head of '", ShownName(h.participant),
        "' is malformed (it needs an entry number of at least 1, a hash of 64 hex digits, a "
        "time before 2255, and a certificate and signature of sensible size)"));
  }
  return checker.Check(h.participant, kind, h.certificate_pem, AuditHeadMessage(h), h.signature,
                       std::chrono::system_clock::time_point(std::chrono::milliseconds(h.unix_millis)));
}

std::string AuditHeadLine(const SignedAuditHead& h, int64_t received_unix_millis) {
  std::string signature;
  signature.resize(sodium_base64_ENCODED_LEN(h.signature.size(), sodium_base64_VARIANT_ORIGINAL));
  sodium_bin2base64(signature.data(), signature.size(),
                    reinterpret_cast<const unsigned char*>(h.signature.data()), h.signature.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  signature.resize(std::strlen(signature.c_str()));
  return nlohmann::json{{"federation", h.federation},
                        {"participant", h.participant},
                        {"entries", h.head.seq},
                        {"hash", h.head.hash},
                        {"unix_millis", h.unix_millis},
                        {"received_unix_millis", received_unix_millis},
                        {"certificate", h.certificate_pem},
                        {"signature", signature}}
      .dump();
}

StatusOr<SignedAuditHead> ParseAuditHeadLine(absl::string_view line, absl::string_view source) {
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an audit anchor: ", why));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  SignedAuditHead h;
  for (const char* key : {"federation", "participant", "hash", "certificate", "signature"}) {
    if (!j.contains(key) || !j[key].is_string()) return bad(absl::StrCat("no text '", key, "'"));
  }
  for (const char* key : {"entries", "unix_millis"}) {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      return bad(absl::StrCat("no whole number '", key, "'"));
    }
  }
  h.federation = j["federation"].get<std::string>();
  h.participant = j["participant"].get<std::string>();
  h.head.seq = j["entries"].get<int64_t>();
  h.head.hash = j["hash"].get<std::string>();
  h.unix_millis = j["unix_millis"].get<int64_t>();
  h.certificate_pem = j["certificate"].get<std::string>();
  const std::string signature = j["signature"].get<std::string>();
  h.signature.resize(signature.size());
  size_t length = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(h.signature.data()), h.signature.size(),
                        signature.data(), signature.size(), nullptr, &length, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    return bad("the signature is not base64");
  }
  h.signature.resize(length);
  return h;
}

}  // namespace fedsilo::secure
