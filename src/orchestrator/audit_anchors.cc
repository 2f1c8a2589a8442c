#include "orchestrator/audit_anchors.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"

namespace fedsilo::orchestrator {
namespace {

int64_t Millis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// Appends one line and makes it durable; errors name the file.
Status AppendLine(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": ", std::strerror(errno)));
  const std::string bytes = line + "\n";
  const ssize_t wrote = ::write(fd, bytes.data(), bytes.size());
  const int err = errno;
  const bool synced = wrote == static_cast<ssize_t>(bytes.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) {
    return absl::InternalError(absl::StrCat(
        path, ": cannot append an anchor: ", wrote < 0 ? std::strerror(err) : "short write"));
  }
  return absl::OkStatus();
}

}  // namespace

StatusOr<std::unique_ptr<AuditAnchors>> AuditAnchors::Open(std::string dir,
                                                           secure::AuditLog* audit, Clock clock) {
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir));
  if (!clock) clock = [] { return std::chrono::system_clock::now(); };
  return std::unique_ptr<AuditAnchors>(new AuditAnchors(std::move(dir), audit, std::move(clock)));
}

std::string AuditAnchors::PathOf(const std::string& silo) const {
  // Participant names are letters, digits, '-', '_' and '.'; anything else
  // (never issued by fedsilo's provisioning) is spelled in hex.
  const bool plain = !silo.empty() && silo.find_first_not_of(
                                          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789-_.") == std::string::npos;
  return absl::StrCat(dir_, "/", plain ? silo : "x-" + absl::BytesToHexString(silo), ".jsonl");
}

std::optional<AuditAnchors::Last> AuditAnchors::LastOf(const std::string& silo) {
  auto it = last_.find(silo);
  if (it != last_.end()) return it->second;
  std::optional<Last> last;
  StatusOr<std::string> text = ReadFile(PathOf(silo));
  if (text.ok()) {
    std::vector<absl::string_view> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
    if (!lines.empty()) {
      StatusOr<secure::SignedAuditHead> head =
          secure::ParseAuditHeadLine(lines.back(), PathOf(silo));
      if (head.ok()) last = Last{head->head, kBurst, clock_()};
    }
  }
  last_[silo] = last;
  return last;
}

void AuditAnchors::Record(const secure::SignedAuditHead& head) {
  MutexLock lock(&mu_);
  const std::string& silo = head.participant;
  const std::chrono::system_clock::time_point now = clock_();
  std::optional<Last> last = LastOf(silo);
  const bool behind = last.has_value() && head.head.seq < last->head.seq;
  const bool rewritten =
      last.has_value() && head.head.seq == last->head.seq && head.head.hash != last->head.hash;
  Last next{head.head, kBurst - 1, now};
  if (last.has_value()) {
    if (!behind && !rewritten && head.head.seq == last->head.seq) return;  // nothing new
    // Every head kept costs one of the silo's allowance, regressions too: a
    // silo alternating two heads gets no further than one counting up.
    const double earned = std::chrono::duration<double>(now - last->counted) / kRefill;
    next.allowance = std::min(kBurst, last->allowance + std::max(0.0, earned));
    if (next.allowance < 1) {
      last_[silo]->allowance = next.allowance;
      last_[silo]->counted = now;
      return;
    }
    next.allowance -= 1;
  }
  const std::string path = PathOf(silo);
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size >= kMaxFileBytes) {
    if (full_.insert(silo).second) {
      spdlog::error("silo '{}': {} holds {} bytes; no more of its audit log heads are kept until "
                    "it is archived",
                    silo, path, size);
    }
    return;
  }
  if (Status kept = AppendLine(path, secure::AuditHeadLine(head, Millis(now))); !kept.ok()) {
    spdlog::error("silo '{}': its audit log head was not kept: {}", silo,
                  std::string(kept.message()));
    return;
  }
  last_[silo] = next;
  std::map<std::string, std::string> data = {{"silo", silo},
                                             {"entries", std::to_string(head.head.seq)},
                                             {"hash", head.head.hash}};
  if (behind || rewritten) {
    spdlog::warn(
        "silo '{}': its audit log {} (entry {} now, entry {} with hash {} before): entries were "
        "cut off or rewritten there; the anchors in {} show what it held",
        silo, behind ? "went back" : "was rewritten", head.head.seq, last->head.seq,
        last->head.hash, path);
    data["previous_entries"] = std::to_string(last->head.seq);
    data["previous_hash"] = last->head.hash;
  }
  if (audit_ != nullptr) {
    audit_->Record(behind || rewritten ? "silo_audit_head_regressed" : "silo_audit_head", data);
  }
}

}  // namespace fedsilo::orchestrator
