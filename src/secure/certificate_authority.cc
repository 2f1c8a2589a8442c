#include "secure/certificate_authority.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/mutex.h"
#include "core/unix_time.h"
#include "secure/revocation.h"

namespace fedsilo::secure {
namespace {

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX_free>>;
using CrlPtr = std::unique_ptr<X509_CRL, Deleter<X509_CRL_free>>;
using AsnTimePtr = std::unique_ptr<ASN1_TIME, Deleter<ASN1_TIME_free>>;

// The oldest error on OpenSSL's queue, as text; clears the queue.
std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  return buffer;
}

Status Fail(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslError()));
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) return Fail("writing certificate");
  return BioText(bio.get());
}

StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return Fail("writing private key");
  }
  std::string pem = BioText(bio.get());
  // The BIO's copy is freed by BIO_free_all; clear it first.
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  OPENSSL_cleanse(data, static_cast<size_t>(n));
  return pem;
}

StatusOr<CertPtr> ParseCert(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  CertPtr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  return cert;
}

StatusOr<KeyPtr> ParseKey(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM private key");
  }
  return key;
}

StatusOr<KeyPtr> NewKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return Fail("generating an EC key");
  return key;
}

// Adds an extension written in OpenSSL's config syntax.
Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (ext == nullptr) return Fail(absl::StrCat("extension '", value, "'"));
  if (!X509_add_ext(cert, ext.get(), -1)) return Fail("adding extension");
  return absl::OkStatus();
}

Status SetName(X509_NAME* name, const std::string& federation, const std::string& unit,
               const std::string& common_name) {
  auto add = [&](const char* field, const std::string& value) {
    return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                      0) == 1;
  };
  if (!add("O", federation) || !add("OU", unit) || !add("CN", common_name)) {
    return Fail("setting certificate name");
  }
  return absl::OkStatus();
}

std::string NameField(X509_NAME* name, int nid) {
  const int index = X509_NAME_get_index_by_NID(name, nid, -1);
  if (index < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

// A fresh certificate shell: version 3, random 127-bit serial, validity.
StatusOr<CertPtr> NewCertificate(EVP_PKEY* key, std::chrono::system_clock::time_point now,
                                 int valid_days, std::time_t not_after_limit) {
  CertPtr cert(X509_new());
  if (cert == nullptr || !X509_set_version(cert.get(), 2)) return Fail("creating certificate");
  BnPtr serial(BN_new());
  if (!BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return Fail("creating serial number");
  }
  std::time_t start = std::chrono::system_clock::to_time_t(now);
  std::time_t end = start + static_cast<std::time_t>(valid_days) * 86400;
  if (not_after_limit > 0) end = std::min(end, not_after_limit);
  if (X509_time_adj_ex(X509_getm_notBefore(cert.get()), 0, 0, &start) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), 0, 0, &end) == nullptr) {
    return Fail("setting validity");
  }
  if (!X509_set_pubkey(cert.get(), key)) return Fail("setting public key");
  return cert;
}

bool IsIpAddress(const std::string& host) {
  ASN1_OCTET_STRING* ip = a2i_IPADDRESS(host.c_str());
  if (ip == nullptr) {
    ERR_clear_error();
    return false;
  }
  ASN1_OCTET_STRING_free(ip);
  return true;
}

bool IsValidHost(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  if (IsIpAddress(host)) return true;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*';
  });
}

std::time_t ToTimeT(const ASN1_TIME* t) {
  struct tm tm {};
  if (!ASN1_TIME_to_tm(t, &tm)) return 0;
  return timegm(&tm);
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) return "";
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

// The identity fields of a parsed certificate (kind from the OU, if it names one).
CertificateSummary Summarize(X509* cert) {
  CertificateSummary out;
  X509_NAME* subject = X509_get_subject_name(cert);
  out.peer.name = NameField(subject, NID_commonName);
  out.peer.federation = NameField(subject, NID_organizationName);
  StatusOr<ParticipantKind> kind =
      ParseParticipantKind(NameField(subject, NID_organizationalUnitName));
  out.kind_known = kind.ok();
  if (kind.ok()) out.peer.kind = *kind;
  out.peer.serial = SerialHex(X509_get0_serialNumber(cert));
  out.peer.not_before = std::chrono::system_clock::from_time_t(ToTimeT(X509_get0_notBefore(cert)));
  out.peer.not_after = std::chrono::system_clock::from_time_t(ToTimeT(X509_get0_notAfter(cert)));
  return out;
}

}  // namespace

absl::string_view ParticipantKindName(ParticipantKind kind) {
  switch (kind) {
    case ParticipantKind::kOrchestrator:
      return "orchestrator";
    case ParticipantKind::kSilo:
      return "silo";
    case ParticipantKind::kUser:
      return "user";
  }
  return "?";
}

StatusOr<ParticipantKind> ParseParticipantKind(absl::string_view name) {
  for (ParticipantKind k :
       {ParticipantKind::kOrchestrator, ParticipantKind::kSilo, ParticipantKind::kUser}) {
    if (ParticipantKindName(k) == name) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown participant kind '", name, "'; one of: orchestrator, silo, user"));
}

void WipeString(std::string& s) { OPENSSL_cleanse(s.data(), s.size()); }

IssuedCertificate::~IssuedCertificate() { WipeString(private_key_pem); }

struct CertificateAuthority::Impl {
  KeyPtr key;
  CertPtr cert;
  std::string federation;
};

CertificateAuthority::CertificateAuthority(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CertificateAuthority::~CertificateAuthority() = default;

StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Create(
    const std::string& federation, int valid_days, std::chrono::system_clock::time_point now) {
  if (federation.empty()) return absl::InvalidArgumentError("federation name is empty");
  if (valid_days < 1) return absl::InvalidArgumentError("CA validity must be at least 1 day");
  auto impl = std::make_unique<Impl>();
  impl->federation = federation;
  FEDSILO_ASSIGN_OR_RETURN(impl->key, NewKey());
  FEDSILO_ASSIGN_OR_RETURN(impl->cert, NewCertificate(impl->key.get(), now, valid_days, 0));
  X509* cert = impl->cert.get();
  FEDSILO_RETURN_IF_ERROR(
      SetName(X509_get_subject_name(cert), federation, "ca", absl::StrCat(federation, " CA")));
  if (!X509_set_issuer_name(cert, X509_get_subject_name(cert))) return Fail("setting issuer");
  FEDSILO_RETURN_IF_ERROR(
      AddExtension(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  FEDSILO_RETURN_IF_ERROR(AddExtension(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  FEDSILO_RETURN_IF_ERROR(AddExtension(cert, cert, NID_subject_key_identifier, "hash"));
  if (!X509_sign(cert, impl->key.get(), EVP_sha256())) return Fail("signing CA certificate");
  auto ca = std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(impl)));
  FEDSILO_ASSIGN_OR_RETURN(ca->certificate_pem_, CertToPem(cert));
  return ca;
}

StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Load(
    const std::string& certificate_pem, const std::string& private_key_pem) {
  auto impl = std::make_unique<Impl>();
  FEDSILO_ASSIGN_OR_RETURN(impl->cert, ParseCert(certificate_pem));
  FEDSILO_ASSIGN_OR_RETURN(impl->key, ParseKey(private_key_pem));
  if (X509_check_private_key(impl->cert.get(), impl->key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the CA key does not belong to the CA certificate");
  }
  if (X509_check_ca(impl->cert.get()) == 0) {
    return absl::InvalidArgumentError("the certificate is not a CA certificate");
  }
  impl->federation = NameField(X509_get_subject_name(impl->cert.get()), NID_organizationName);
  auto ca = std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(impl)));
  ca->certificate_pem_ = certificate_pem;
  return ca;
}

std::string CertificateAuthority::PrivateKeyPem() const {
  StatusOr<std::string> pem = KeyToPem(impl_->key.get());
  return pem.ok() ? *pem : "";
}

StatusOr<IssuedCertificate> CertificateAuthority::Issue(
    const CertificateRequest& request, std::chrono::system_clock::time_point now) const {
  if (request.name.empty()) return absl::InvalidArgumentError("certificate name is empty");
  if (request.valid_days < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate validity must be at least 1 day, got ", request.valid_days));
  }
  for (const std::string& host : request.hosts) {
    if (!IsValidHost(host)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", host, "' is not a host name or IP address"));
    }
  }
  KeyPtr key;
  FEDSILO_ASSIGN_OR_RETURN(key, NewKey());
  const std::time_t ca_end = ToTimeT(X509_get0_notAfter(impl_->cert.get()));
  CertPtr cert;
  FEDSILO_ASSIGN_OR_RETURN(cert, NewCertificate(key.get(), now, request.valid_days, ca_end));
  X509* c = cert.get();
  X509* ca = impl_->cert.get();
  FEDSILO_RETURN_IF_ERROR(SetName(X509_get_subject_name(c), impl_->federation,
                                  std::string(ParticipantKindName(request.kind)), request.name));
  if (!X509_set_issuer_name(c, X509_get_subject_name(ca))) return Fail("setting issuer");
  FEDSILO_RETURN_IF_ERROR(AddExtension(c, ca, NID_basic_constraints, "critical,CA:FALSE"));
  FEDSILO_RETURN_IF_ERROR(
      AddExtension(c, ca, NID_key_usage, "critical,digitalSignature,keyAgreement"));
  FEDSILO_RETURN_IF_ERROR(AddExtension(
      c, ca, NID_ext_key_usage,
      request.kind == ParticipantKind::kOrchestrator ? "serverAuth,clientAuth" : "clientAuth"));
  FEDSILO_RETURN_IF_ERROR(AddExtension(c, ca, NID_subject_key_identifier, "hash"));
  FEDSILO_RETURN_IF_ERROR(AddExtension(c, ca, NID_authority_key_identifier, "keyid:always"));
  if (!request.hosts.empty()) {
    std::string san;
    for (const std::string& host : request.hosts) {
      absl::StrAppend(&san, san.empty() ? "" : ",", IsIpAddress(host) ? "IP:" : "DNS:", host);
    }
    FEDSILO_RETURN_IF_ERROR(AddExtension(c, ca, NID_subject_alt_name, san));
  }
  if (!X509_sign(c, impl_->key.get(), EVP_sha256())) return Fail("signing certificate");
  IssuedCertificate issued;
  FEDSILO_ASSIGN_OR_RETURN(issued.certificate_pem, CertToPem(c));
  FEDSILO_ASSIGN_OR_RETURN(issued.private_key_pem, KeyToPem(key.get()));
  return issued;
}

std::string ShownName(absl::string_view name) {
  constexpr size_t kMost = 80;
  std::string shown = absl::CHexEscape(name.substr(0, kMost));
  if (name.size() > kMost) absl::StrAppend(&shown, "...");
  return shown;
}

StatusOr<PeerIdentity> VerifyCertificate(const std::string& certificate_pem,
                                         const std::string& ca_certificate_pem,
                                         std::chrono::system_clock::time_point now) {
  FEDSILO_ASSIGN_OR_RETURN(CertPtr cert, ParseCert(certificate_pem));
  StatusOr<CertPtr> ca = ParseCert(ca_certificate_pem);
  if (!ca.ok()) return Annotate(ca.status(), "CA certificate");
  StorePtr store(X509_STORE_new());
  if (!X509_STORE_add_cert(store.get(), ca->get())) return Fail("loading CA certificate");
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr)) {
    return Fail("preparing verification");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, std::chrono::system_clock::to_time_t(now));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    const CertificateSummary claimed = Summarize(cert.get());
    std::string why;
    switch (error) {
      case X509_V_ERR_CERT_HAS_EXPIRED:
        why = absl::StrCat(" (it expired on ", UtcTime(claimed.peer.not_after), ")");
        break;
      case X509_V_ERR_CERT_NOT_YET_VALID:
        why = absl::StrCat(" (it is valid from ", UtcTime(claimed.peer.not_before),
                           "; is a clock wrong?)");
        break;
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        why = absl::StrCat(" (it was not issued by this federation's CA; it names federation '",
                           ShownName(claimed.peer.federation), "': a kit of another federation?)");
        break;
      default:
        break;
    }
    return absl::PermissionDeniedError(
        absl::StrCat("certificate of '", ShownName(claimed.peer.name),
                     "' does not verify: ", X509_verify_cert_error_string(error), why));
  }
  const CertificateSummary summary = Summarize(cert.get());
  if (!summary.kind_known || summary.peer.name.empty()) {
    return absl::PermissionDeniedError(absl::StrCat("certificate of '",
                                                    ShownName(summary.peer.name),
                                                    "' names no fedsilo participant kind (OU)"));
  }
  return summary.peer;
}

StatusOr<CertificateSummary> DescribeCertificate(const std::string& certificate_pem) {
  FEDSILO_ASSIGN_OR_RETURN(CertPtr cert, ParseCert(certificate_pem));
  return Summarize(cert.get());
}

StatusOr<std::string> CertificateAuthority::MakeCrl(
    const std::vector<RevokedCertificate>& revoked,
    std::chrono::system_clock::time_point now) const {
  CrlPtr crl(X509_CRL_new());
  const std::time_t issued = std::chrono::system_clock::to_time_t(now);
  AsnTimePtr last(ASN1_TIME_set(nullptr, issued));
  if (crl == nullptr || last == nullptr || !X509_CRL_set_version(crl.get(), 1) ||
      !X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(impl_->cert.get())) ||
      !X509_CRL_set1_lastUpdate(crl.get(), last.get()) ||
      !X509_CRL_set1_nextUpdate(crl.get(), X509_get0_notAfter(impl_->cert.get()))) {
    return Fail("creating the revocation list");
  }
  for (const RevokedCertificate& r : revoked) {
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, r.serial.c_str()) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", r.serial, "' is not a hex serial"));
    }
    BnPtr bn(raw);
    std::unique_ptr<X509_REVOKED, Deleter<X509_REVOKED_free>> entry(X509_REVOKED_new());
    std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER_free>> serial(
        BN_to_ASN1_INTEGER(bn.get(), nullptr));
    AsnTimePtr when(ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(r.revoked_at)));
    if (entry == nullptr || serial == nullptr || when == nullptr ||
        !X509_REVOKED_set_serialNumber(entry.get(), serial.get()) ||
        !X509_REVOKED_set_revocationDate(entry.get(), when.get()) ||
        !X509_CRL_add0_revoked(crl.get(), entry.get())) {
      return Fail("adding to the revocation list");
    }
    entry.release();  // owned by the CRL
  }
  if (!X509_CRL_sort(crl.get()) || !X509_CRL_sign(crl.get(), impl_->key.get(), EVP_sha256())) {
    return Fail("signing the revocation list");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_CRL(bio.get(), crl.get())) return Fail("writing the revocation list");
  return BioText(bio.get());
}

StatusOr<std::vector<RevokedCertificate>> ReadCrl(const std::string& crl_pem,
                                                  const std::string& ca_pem) {
  BioPtr bio(BIO_new_mem_buf(crl_pem.data(), static_cast<int>(crl_pem.size())));
  CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (crl == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate revocation list");
  }
  StatusOr<CertPtr> ca = ParseCert(ca_pem);
  if (!ca.ok()) return Annotate(ca.status(), "CA certificate");
  if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(ca->get())) != 0 ||
      X509_CRL_verify(crl.get(), X509_get0_pubkey(ca->get())) != 1) {
    ERR_clear_error();
    return absl::PermissionDeniedError("the revocation list is not signed by this federation's CA");
  }
  std::vector<RevokedCertificate> out;
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
    const X509_REVOKED* r = sk_X509_REVOKED_value(entries, i);
    out.push_back(
        {SerialHex(X509_REVOKED_get0_serialNumber(r)),
         std::chrono::system_clock::from_time_t(ToTimeT(X509_REVOKED_get0_revocationDate(r)))});
  }
  return out;
}

struct MessageSigner::Impl {
  KeyPtr key;
};

MessageSigner::MessageSigner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MessageSigner::~MessageSigner() = default;

StatusOr<std::unique_ptr<MessageSigner>> MessageSigner::Create(const std::string& private_key_pem) {
  auto impl = std::make_unique<Impl>();
  FEDSILO_ASSIGN_OR_RETURN(impl->key, ParseKey(private_key_pem));
  return std::unique_ptr<MessageSigner>(new MessageSigner(std::move(impl)));
}

StatusOr<std::string> MessageSigner::Sign(absl::string_view message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t size = 0;
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, impl_->key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size, nullptr, 0) != 1) {
    return Fail("preparing a signature");
  }
  std::string signature(size, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return Fail("signing");
  }
  signature.resize(size);
  return signature;
}

struct SignatureChecker::Impl {
  std::string ca_pem;
  std::shared_ptr<const RevocationList> revoked;
  struct Verified {
    PeerIdentity peer;
    CertPtr cert;  // owns the public key
  };
  mutable Mutex mu;
  // certificate PEM -> what it was verified to be
  mutable std::map<std::string, std::shared_ptr<const Verified>> verified ABSL_GUARDED_BY(mu);
};

SignatureChecker::SignatureChecker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SignatureChecker::~SignatureChecker() = default;

StatusOr<std::unique_ptr<SignatureChecker>> SignatureChecker::Create(
    const std::string& ca_pem, std::shared_ptr<const RevocationList> revoked) {
  StatusOr<CertPtr> ca = ParseCert(ca_pem);
  if (!ca.ok()) return Annotate(ca.status(), "CA certificate");
  auto impl = std::make_unique<Impl>();
  impl->ca_pem = ca_pem;
  impl->revoked = std::move(revoked);
  return std::unique_ptr<SignatureChecker>(new SignatureChecker(std::move(impl)));
}

Status SignatureChecker::Check(const std::string& name, ParticipantKind kind,
                               const std::string& certificate_pem, absl::string_view message,
                               absl::string_view signature,
                               std::chrono::system_clock::time_point now) const {
  if (certificate_pem.empty() || signature.empty()) {
    return absl::PermissionDeniedError(absl::StrCat("'", name, "' sent no signature"));
  }
  std::shared_ptr<const Impl::Verified> entry;
  {
    MutexLock lock(&impl_->mu);
    auto it = impl_->verified.find(certificate_pem);
    if (it != impl_->verified.end()) entry = it->second;
  }
  if (entry == nullptr) {
    StatusOr<PeerIdentity> peer = VerifyCertificate(certificate_pem, impl_->ca_pem, now);
    if (!peer.ok()) {
      return absl::PermissionDeniedError(
          absl::StrCat("the certificate given for '", name, "': ", peer.status().message()));
    }
    auto verified = std::make_shared<Impl::Verified>();
    verified->peer = *std::move(peer);
    FEDSILO_ASSIGN_OR_RETURN(verified->cert, ParseCert(certificate_pem));
    MutexLock lock(&impl_->mu);
    if (impl_->verified.size() >= 4096) impl_->verified.clear();  // bounded
    entry = impl_->verified.emplace(certificate_pem, std::move(verified)).first->second;
  } else if (now > entry->peer.not_after) {
    return absl::PermissionDeniedError(
        absl::StrCat("the certificate given for '", name, "' has expired"));
  }
  if (impl_->revoked != nullptr) FEDSILO_RETURN_IF_ERROR(impl_->revoked->Check(entry->peer));
  if (entry->peer.kind != kind || entry->peer.name != name) {
    return absl::PermissionDeniedError(
        absl::StrCat("the certificate given for '", name, "' belongs to ",
                     ParticipantKindName(entry->peer.kind), " '", entry->peer.name, "'"));
  }
  EVP_PKEY* key = X509_get0_pubkey(entry->cert.get());
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (key == nullptr || ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) {
    return Fail("preparing a signature check");
  }
  const int ok = EVP_DigestVerify(
      ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
      reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  if (ok != 1) {
    return absl::PermissionDeniedError(
        absl::StrCat("the signature of '", name, "' does not verify"));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::secure
