// CertificateAuthority: the federation's own CA. It issues an X.509
// certificate (ECDSA P-256, SHA-256) to every participant; the participant's
// name is the certificate's common name and its kind the organisational unit,
// so that a peer's identity is read from its verified certificate, never from a
// message. Built on OpenSSL.
//
// Thread safety: a CertificateAuthority is immutable after creation; Issue() is
// safe to call from several threads.
#ifndef FEDSILO_SECURE_CERTIFICATE_AUTHORITY_H_
#define FEDSILO_SECURE_CERTIFICATE_AUTHORITY_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo::secure {

class RevocationList;

enum class ParticipantKind { kOrchestrator, kSilo, kUser };

absl::string_view ParticipantKindName(ParticipantKind kind);
// InvalidArgument for anything but "orchestrator", "silo", "user".
StatusOr<ParticipantKind> ParseParticipantKind(absl::string_view name);

// Overwrites a string's bytes (key material) before it is freed.
void WipeString(std::string& s);

// A certificate and its private key, PEM-encoded. The key is wiped from memory
// when the object is destroyed.
struct IssuedCertificate {
  std::string certificate_pem;
  std::string private_key_pem;
  ~IssuedCertificate();
};

// A certificate that the CA revoked (secure/revocation.h).
struct RevokedCertificate {
  std::string serial;  // hex, as in PeerIdentity::serial
  std::chrono::system_clock::time_point revoked_at;
};

struct CertificateRequest {
  std::string name;  // common name: the participant's identity
  ParticipantKind kind = ParticipantKind::kSilo;
  // Subject alternative names (DNS names or IP addresses) a server is reached
  // at; clients need none.
  std::vector<std::string> hosts;
  int valid_days = 365;
};

class CertificateAuthority {
 public:
  // Creates a new CA key and self-signed certificate valid from `now` for
  // `valid_days` days.
  static StatusOr<std::unique_ptr<CertificateAuthority>> Create(
      const std::string& federation, int valid_days, std::chrono::system_clock::time_point now);
  // Loads a CA from its PEM certificate and key. InvalidArgument when either
  // does not parse or they do not belong together.
  static StatusOr<std::unique_ptr<CertificateAuthority>> Load(const std::string& certificate_pem,
                                                              const std::string& private_key_pem);
  ~CertificateAuthority();

  // Issues a certificate valid from `now`; it expires after min(valid_days,
  // the CA's own remaining validity). InvalidArgument for an empty name, a
  // bad host or valid_days < 1.
  StatusOr<IssuedCertificate> Issue(const CertificateRequest& request,
                                    std::chrono::system_clock::time_point now) const;

  const std::string& certificate_pem() const { return certificate_pem_; }
  // The CA's private key; keep it with the federation operator only.
  std::string PrivateKeyPem() const;

  // A certificate revocation list (PEM) that names `revoked`, signed by this
  // CA, issued at `now` and next updated when the CA expires.
  StatusOr<std::string> MakeCrl(const std::vector<RevokedCertificate>& revoked,
                                std::chrono::system_clock::time_point now) const;

 private:
  struct Impl;
  explicit CertificateAuthority(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string certificate_pem_;
};

// Who a verified certificate belongs to.
struct PeerIdentity {
  std::string name;
  ParticipantKind kind = ParticipantKind::kSilo;
  std::string federation;
  std::string serial;  // hex
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
};

// A name taken from a certificate that is not verified (yet), fit for a log
// line or a message: control characters, quotes and other bytes that are not
// printable ASCII are escaped (\n, \x1b), and it is cut at 80 characters.
std::string ShownName(absl::string_view name);

// What a certificate says of its holder and dates, without verifying it
// (`fedsilo provision list`; kind is kSilo and kind_known false when its OU
// names none). InvalidArgument when it does not parse.
struct CertificateSummary {
  PeerIdentity peer;
  bool kind_known = false;
};
StatusOr<CertificateSummary> DescribeCertificate(const std::string& certificate_pem);

// The certificates a CRL revokes. PermissionDenied when `ca_pem`'s key did
// not sign it; InvalidArgument when it does not parse.
StatusOr<std::vector<RevokedCertificate>> ReadCrl(const std::string& crl_pem,
                                                  const std::string& ca_pem);

// Verifies `certificate_pem` against the CA certificate at time `now` (chain,
// signature, validity period) and returns whom it names. PermissionDenied with
// the reason (unknown CA, expired, not yet valid, no participant kind) when it
// does not verify; InvalidArgument when it does not parse.
StatusOr<PeerIdentity> VerifyCertificate(const std::string& certificate_pem,
                                         const std::string& ca_certificate_pem,
                                         std::chrono::system_clock::time_point now);

// A participant's private key, parsed once, that signs messages (ECDSA P-256
// over SHA-256; DER signatures). The key is freed (and wiped by OpenSSL) with
// the object. Thread-safe.
class MessageSigner {
 public:
  // InvalidArgument when the key does not parse.
  static StatusOr<std::unique_ptr<MessageSigner>> Create(const std::string& private_key_pem);
  ~MessageSigner();
  StatusOr<std::string> Sign(absl::string_view message) const;

 private:
  struct Impl;
  explicit MessageSigner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Checks participants' signed messages: the certificate that comes with one
// must verify against the CA (VerifyCertificate) and name the expected
// participant, and the signature must be its key's. A certificate verified
// once is kept, parsed, so that seeing it again (every round) costs one
// signature check and a look at its expiry. Thread-safe.
class SignatureChecker {
 public:
  // InvalidArgument when the CA certificate does not parse. Certificates in
  // `revoked` (may be null) are refused too.
  static StatusOr<std::unique_ptr<SignatureChecker>> Create(
      const std::string& ca_pem, std::shared_ptr<const RevocationList> revoked = nullptr);
  ~SignatureChecker();

  // PermissionDenied, naming `name` and saying why, unless `certificate_pem`
  // is valid at `now`, was issued by the CA to a participant `name` of
  // `kind`, and signed `message`.
  Status Check(const std::string& name, ParticipantKind kind, const std::string& certificate_pem,
               absl::string_view message, absl::string_view signature,
               std::chrono::system_clock::time_point now) const;

 private:
  struct Impl;
  explicit SignatureChecker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_CERTIFICATE_AUTHORITY_H_
