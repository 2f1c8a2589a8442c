// RevocationList: the certificates the federation operator revoked (`fedsilo
// provision revoke NAME`), from a kit's copy of the CA's revocation list
// (<kit>/crl.pem), re-read whenever that file changes. The orchestrator
// consults it at every TLS handshake, every call and every message of a silo's
// stream; silos consult it for the other silos of a secure-aggregation round.
//
// Thread safety: thread-safe.
#ifndef FEDSILO_SECURE_REVOCATION_H_
#define FEDSILO_SECURE_REVOCATION_H_

#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "core/status.h"
#include "secure/certificate_authority.h"

namespace fedsilo::secure {

class RevocationList {
 public:
  // Reads `crl_path`; an absent file revokes nothing (until it appears).
  // InvalidArgument / PermissionDenied naming the file when it exists but does
  // not parse or is not signed by the CA of `ca_pem`.
  static StatusOr<std::shared_ptr<RevocationList>> Open(std::string crl_path, std::string ca_pem);
  // Revokes nothing, ever (a kit-less test, an insecure debugging run).
  static std::shared_ptr<RevocationList> Empty();

  // Whether the certificate with serial `serial` (hex) is revoked. Looks at
  // the file again when `recheck` has passed since the last look and re-reads
  // it if it changed; a changed file that does not verify is logged and the
  // list read before is kept (a broken copy revokes nothing new, and
  // un-revokes nothing).
  bool IsRevoked(const std::string& serial) const;
  // PermissionDenied naming `peer` and its serial when it is revoked.
  Status Check(const PeerIdentity& peer) const;
  int size() const;

  // How often the file is looked at (default 2 s).
  void set_recheck(std::chrono::milliseconds every) { recheck_ = every; }

 private:
  RevocationList(std::string crl_path, std::string ca_pem)
      : path_(std::move(crl_path)), ca_pem_(std::move(ca_pem)) {}
  // Re-reads the file if it changed. REQUIRES: mu_ held.
  Status Refresh() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;  // empty: Empty()
  const std::string ca_pem_;
  std::chrono::milliseconds recheck_{2000};
  mutable Mutex mu_;
  mutable std::set<std::string> serials_ ABSL_GUARDED_BY(mu_);
  mutable std::chrono::steady_clock::time_point checked_ ABSL_GUARDED_BY(mu_);
  mutable std::string seen_ ABSL_GUARDED_BY(mu_);  // size and mtime of the file read
};

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_REVOCATION_H_
