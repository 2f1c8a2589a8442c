#include "secure/revocation.h"

#include <spdlog/spdlog.h>

#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/mutex.h"
#include "secure/certificate_authority.h"

namespace fedsilo::secure {
namespace {

// The file's size and modification time as text; "" when it does not exist.
std::string Stamp(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return "";
  const auto mtime = std::filesystem::last_write_time(path, ec);
  if (ec) return "";
  return absl::StrCat(size, "@", mtime.time_since_epoch().count());
}

}  // namespace

StatusOr<std::shared_ptr<RevocationList>> RevocationList::Open(std::string crl_path,
                                                               std::string ca_pem) {
  std::shared_ptr<RevocationList> list(new RevocationList(std::move(crl_path), std::move(ca_pem)));
  MutexLock lock(&list->mu_);
  FEDSILO_RETURN_IF_ERROR(list->Refresh());
  list->checked_ = std::chrono::steady_clock::now();
  return list;
}

std::shared_ptr<RevocationList> RevocationList::Empty() {
  return std::shared_ptr<RevocationList>(new RevocationList("", ""));
}

Status RevocationList::Refresh() const {
  const std::string stamp = Stamp(path_);
  if (stamp == seen_) return absl::OkStatus();
  if (stamp.empty()) {
    // Removed: keep what was revoked; a revocation is not undone by deleting
    // a file.
    return absl::OkStatus();
  }
  seen_ = stamp;  // a broken file is reported once, not at every look
  FEDSILO_ASSIGN_OR_RETURN(std::string pem, ReadFile(path_));
  StatusOr<std::vector<RevokedCertificate>> revoked = ReadCrl(pem, ca_pem_);
  if (!revoked.ok()) return Annotate(revoked.status(), path_);
  std::set<std::string> serials = serials_;  // a list only grows
  for (const RevokedCertificate& r : *revoked) serials.insert(r.serial);
  if (serials.size() != serials_.size()) {
    spdlog::info("{}: {} revoked certificate(s)", path_, serials.size());
  }
  serials_ = std::move(serials);
  return absl::OkStatus();
}

bool RevocationList::IsRevoked(const std::string& serial) const {
  MutexLock lock(&mu_);
  if (!path_.empty()) {
    const auto now = std::chrono::steady_clock::now();
    if (now - checked_ >= recheck_) {
      checked_ = now;
      if (Status s = Refresh(); !s.ok()) {
        spdlog::error("revocation list not reloaded, the one read before still applies: {}",
                      std::string(s.message()));
      }
    }
  }
  return serials_.count(serial) > 0;
}

Status RevocationList::Check(const PeerIdentity& peer) const {
  if (!IsRevoked(peer.serial)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("the certificate of '", peer.name, "' (serial ",
                                                  peer.serial,
                                                  ") was revoked by the federation operator"));
}

int RevocationList::size() const {
  MutexLock lock(&mu_);
  return static_cast<int>(serials_.size());
}

}  // namespace fedsilo::secure
