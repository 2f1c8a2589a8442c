#include "secure/audit_log.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
      nlohmann::json j = nlohmann::json::parse(last, nullptr, false);
      if (j.is_discarded() || !j.contains("hash") || !j.contains("seq")) {
        return absl::DataLossError(absl::StrCat(
            path, ": the last entry is not an audit entry; run `fedsilo audit verify ", path, "`"));
      }
      head = j["hash"].get<std::string>();
      seq = j["seq"].get<int64_t>();
    }
  } else if (!existing.ok() && !absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(path, ": cannot open the audit log: ", std::strerror(errno)));
  }
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
  const std::string line = entry.dump() + "\n";
  // One write with O_APPEND: entries from several threads never interleave.
  if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    return absl::InternalError(
        absl::StrCat(path_, ": cannot append to the audit log: ", std::strerror(errno)));
  }
  ++seq_;
  head_ = hash;
  return absl::OkStatus();
}

void AuditLog::Record(absl::string_view event, const std::map<std::string, std::string>& data) {
  Status s = Append(event, data);
  if (!s.ok()) spdlog::error("audit: {}", std::string(s.message()));
}

StatusOr<AuditVerification> VerifyAuditLog(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  AuditVerification v;
  v.head = kGenesis;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (line.empty()) continue;
    auto broken = [&](absl::string_view why) {
      return absl::DataLossError(absl::StrCat(path, ":", line_number, ": entry ", v.entries + 1,
                                              " ", why, "; the ", v.entries,
                                              " entries before it are intact"));
    };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
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
  }
  if (!text.empty() && text.back() != '\n') {
    return absl::DataLossError(absl::StrCat(path, ":", line_number, ": the last entry is torn"));
  }
  return v;
}

}  // namespace fedsilo::secure
