#include "secure/certificate_authority.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "core/file_util.h"
#include "secure/revocation.h"

namespace fedsilo::secure {
namespace {

using std::chrono::hours;
using ::testing::HasSubstr;

const auto kNow = std::chrono::system_clock::from_time_t(1795000000);  // 2026-11-18
constexpr auto kDay = hours(24);

TEST(CertificateAuthorityTest, IssuedCertificatesVerifyAndNameTheirHolder) {
  auto ca = CertificateAuthority::Create("hospitals", 365, kNow);
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto silo = (*ca)->Issue({"hospital-a", ParticipantKind::kSilo, {}, 30}, kNow);
  ASSERT_TRUE(silo.ok()) << silo.status();
  EXPECT_THAT(silo->certificate_pem, HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_THAT(silo->private_key_pem, HasSubstr("PRIVATE KEY"));

  auto peer = VerifyCertificate(silo->certificate_pem, (*ca)->certificate_pem(), kNow + kDay);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->name, "hospital-a");
  EXPECT_EQ(peer->kind, ParticipantKind::kSilo);
  EXPECT_EQ(peer->federation, "hospitals");
  EXPECT_EQ(peer->not_after, kNow + 30 * kDay);

  auto orch = (*ca)->Issue(
      {"orchestrator", ParticipantKind::kOrchestrator, {"localhost", "127.0.0.1"}, 30}, kNow);
  ASSERT_TRUE(orch.ok()) << orch.status();
  auto orch_peer = VerifyCertificate(orch->certificate_pem, (*ca)->certificate_pem(), kNow);
  ASSERT_TRUE(orch_peer.ok());
  EXPECT_EQ(orch_peer->kind, ParticipantKind::kOrchestrator);
}

// What OpenSSL itself reads from a PEM certificate or private key.
struct ParsedKey {
  int type = 0;       // EVP_PKEY_EC for an EC key
  std::string group;  // the curve's name
};
ParsedKey Describe(EVP_PKEY* key) {
  ParsedKey out;
  if (key == nullptr) return out;
  out.type = EVP_PKEY_get_base_id(key);
  char group[80] = {0};
  size_t length = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                     &length) == 1) {
    out.group.assign(group, length);
  }
  return out;
}
std::unique_ptr<X509, decltype(&X509_free)> ReadCertificate(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                 BIO_free);
  return {PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free};
}
std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> ReadPrivateKey(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                 BIO_free);
  return {PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free};
}

TEST(CertificateAuthorityTest, KeysAreEcdsaP256AndCertificatesAreSignedWithSha256) {
  auto ca = CertificateAuthority::Create("f", 365, kNow);
  ASSERT_TRUE(ca.ok()) << ca.status();
  struct Pem {
    std::string what, certificate, key;
  };
  std::vector<Pem> pems = {{"ca", (*ca)->certificate_pem(), (*ca)->PrivateKeyPem()}};
  for (ParticipantKind kind :
       {ParticipantKind::kSilo, ParticipantKind::kUser, ParticipantKind::kOrchestrator}) {
    auto issued = (*ca)->Issue({"p", kind, {}, 10}, kNow);
    ASSERT_TRUE(issued.ok()) << issued.status();
    pems.push_back({std::string(ParticipantKindName(kind)), issued->certificate_pem,
                    issued->private_key_pem});
  }
  for (const Pem& pem : pems) {
    SCOPED_TRACE(pem.what);
    auto cert = ReadCertificate(pem.certificate);
    ASSERT_NE(cert, nullptr);
    const ParsedKey in_cert = Describe(X509_get0_pubkey(cert.get()));
    EXPECT_EQ(in_cert.type, EVP_PKEY_EC);
    EXPECT_EQ(in_cert.group, SN_X9_62_prime256v1);  // "prime256v1", P-256
    EXPECT_EQ(X509_get_signature_nid(cert.get()), NID_ecdsa_with_SHA256);
    auto key = ReadPrivateKey(pem.key);
    ASSERT_NE(key, nullptr);
    const ParsedKey private_key = Describe(key.get());
    EXPECT_EQ(private_key.type, EVP_PKEY_EC);
    EXPECT_EQ(private_key.group, SN_X9_62_prime256v1);
    EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  }
}

TEST(CertificateAuthorityTest, ExpiredAndNotYetValidCertificatesAreRefused) {
  auto ca = CertificateAuthority::Create("f", 365, kNow);
  auto cert = (*ca)->Issue({"bank-b", ParticipantKind::kSilo, {}, 10}, kNow);
  ASSERT_TRUE(cert.ok());
  auto expired =
      VerifyCertificate(cert->certificate_pem, (*ca)->certificate_pem(), kNow + 11 * kDay);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(expired.status().message(),
              HasSubstr("'bank-b' does not verify: certificate has expired"));
  auto early = VerifyCertificate(cert->certificate_pem, (*ca)->certificate_pem(), kNow - kDay);
  EXPECT_THAT(early.status().message(), HasSubstr("not yet valid"));
}

TEST(CertificateAuthorityTest, CertificatesFromAnotherCaAreRefused) {
  auto ours = CertificateAuthority::Create("ours", 365, kNow);
  auto theirs = CertificateAuthority::Create("ours", 365, kNow);  // same name, other key
  auto cert = (*theirs)->Issue({"mallory", ParticipantKind::kSilo, {}, 10}, kNow);
  auto peer = VerifyCertificate(cert->certificate_pem, (*ours)->certificate_pem(), kNow);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(peer.status().message(), HasSubstr("'mallory' does not verify"));
}

TEST(CertificateAuthorityTest, NamesOfARefusedCertificateCannotForgeLogLines) {
  // Another CA names its holder (and federation) with a line break and a
  // terminal escape: a log line about the refusal must stay one line.
  auto ours = CertificateAuthority::Create("ours", 365, kNow);
  auto theirs = CertificateAuthority::Create("x\n[info] silo 'a' connected", 365, kNow);
  ASSERT_TRUE(theirs.ok()) << theirs.status();
  auto cert = (*theirs)->Issue(
      {"mallory\n[info] silo 'b' connected\x1b[2K", ParticipantKind::kSilo, {}, 10}, kNow);
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto peer = VerifyCertificate(cert->certificate_pem, (*ours)->certificate_pem(), kNow);
  ASSERT_FALSE(peer.ok());
  const std::string message(peer.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.find('\x1b'), std::string::npos) << message;
  EXPECT_THAT(message, HasSubstr("'mallory\\n[info] silo \\'b\\' connected\\x1b[2K'"));
  EXPECT_THAT(message, HasSubstr("names federation 'x\\n[info]"));
  EXPECT_EQ(ShownName(std::string(200, 'a')), std::string(80, 'a') + "...");
  EXPECT_EQ(ShownName("hospital-a"), "hospital-a");
}

TEST(CertificateAuthorityTest, LeafValidityNeverOutlivesTheCa) {
  auto ca = CertificateAuthority::Create("f", 5, kNow);
  auto cert = (*ca)->Issue({"x", ParticipantKind::kUser, {}, 365}, kNow);
  auto peer = VerifyCertificate(cert->certificate_pem, (*ca)->certificate_pem(), kNow);
  ASSERT_TRUE(peer.ok());
  EXPECT_EQ(peer->not_after, kNow + 5 * kDay);
}

TEST(CertificateAuthorityTest, ReloadedCaIssuesCertificatesThatVerify) {
  auto ca = CertificateAuthority::Create("f", 365, kNow);
  auto loaded = CertificateAuthority::Load((*ca)->certificate_pem(), (*ca)->PrivateKeyPem());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto cert = (*loaded)->Issue({"late-silo", ParticipantKind::kSilo, {}, 10}, kNow);
  ASSERT_TRUE(cert.ok());
  EXPECT_TRUE(VerifyCertificate(cert->certificate_pem, (*ca)->certificate_pem(), kNow).ok());

  auto other = CertificateAuthority::Create("g", 365, kNow);
  auto mismatched = CertificateAuthority::Load((*ca)->certificate_pem(), (*other)->PrivateKeyPem());
  EXPECT_THAT(mismatched.status().message(), HasSubstr("does not belong"));
  auto leaf = (*ca)->Issue({"leaf", ParticipantKind::kSilo, {}, 10}, kNow);
  EXPECT_THAT(
      CertificateAuthority::Load(leaf->certificate_pem, leaf->private_key_pem).status().message(),
      HasSubstr("not a CA certificate"));
  EXPECT_EQ(CertificateAuthority::Load("junk", "junk").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CertificateAuthorityTest, BadRequestsAreRefused) {
  auto ca = CertificateAuthority::Create("f", 365, kNow);
  EXPECT_FALSE((*ca)->Issue({"", ParticipantKind::kSilo, {}, 10}, kNow).ok());
  EXPECT_FALSE((*ca)->Issue({"x", ParticipantKind::kSilo, {}, 0}, kNow).ok());
  EXPECT_THAT((*ca)
                  ->Issue({"x", ParticipantKind::kOrchestrator, {"bad host!"}, 10}, kNow)
                  .status()
                  .message(),
              HasSubstr("'bad host!' is not a host name"));
  EXPECT_EQ(VerifyCertificate("junk", (*ca)->certificate_pem(), kNow).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CertificateAuthorityTest, ParticipantKindNames) {
  EXPECT_EQ(*ParseParticipantKind("silo"), ParticipantKind::kSilo);
  EXPECT_EQ(*ParseParticipantKind("user"), ParticipantKind::kUser);
  EXPECT_EQ(ParticipantKindName(ParticipantKind::kOrchestrator), "orchestrator");
  EXPECT_FALSE(ParseParticipantKind("admin").ok());
}

TEST(SignatureCheckerTest, OnlyTheNamedParticipantsKeyUnderTheCaSigns) {
  auto ca = CertificateAuthority::Create("f", 365, kNow);
  auto a = (*ca)->Issue({"bank-a", ParticipantKind::kSilo, {}, 10}, kNow);
  auto user = (*ca)->Issue({"alice", ParticipantKind::kUser, {}, 10}, kNow);
  auto other_ca = CertificateAuthority::Create("f", 365, kNow);
  auto forged = (*other_ca)->Issue({"bank-a", ParticipantKind::kSilo, {}, 10}, kNow);
  auto checker = SignatureChecker::Create((*ca)->certificate_pem());
  ASSERT_TRUE(checker.ok()) << checker.status();
  auto signer = MessageSigner::Create(a->private_key_pem);
  ASSERT_TRUE(signer.ok()) << signer.status();
  const std::string signature = *(*signer)->Sign("round 3 keys");
  const auto check = [&](const std::string& name, ParticipantKind kind, const std::string& cert,
                         const std::string& message, const std::string& sig, auto when) {
    return (*checker)->Check(name, kind, cert, message, sig, when);
  };
  const auto silo = ParticipantKind::kSilo;
  EXPECT_TRUE(check("bank-a", silo, a->certificate_pem, "round 3 keys", signature, kNow).ok());
  // Twice: the second time from the kept certificate.
  EXPECT_TRUE(check("bank-a", silo, a->certificate_pem, "round 3 keys", signature, kNow).ok());
  EXPECT_THAT(
      std::string(
          check("bank-a", silo, a->certificate_pem, "round 4 keys", signature, kNow).message()),
      HasSubstr("the signature of 'bank-a' does not verify"));
  EXPECT_THAT(
      std::string(
          check("bank-b", silo, a->certificate_pem, "round 3 keys", signature, kNow).message()),
      HasSubstr("belongs to silo 'bank-a'"));
  EXPECT_THAT(std::string(check("alice", silo, user->certificate_pem, "x", "y", kNow).message()),
              HasSubstr("belongs to user 'alice'"));
  EXPECT_THAT(
      std::string(check("bank-a", silo, forged->certificate_pem, "round 3 keys",
                        *(*MessageSigner::Create(forged->private_key_pem))->Sign("round 3 keys"),
                        kNow)
                      .message()),
      HasSubstr("does not verify"));
  EXPECT_THAT(std::string(check("bank-a", silo, "", "m", "", kNow).message()),
              HasSubstr("sent no signature"));
  // A kept certificate still expires.
  const Status late =
      check("bank-a", silo, a->certificate_pem, "round 3 keys", signature, kNow + 11 * kDay);
  EXPECT_EQ(late.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(late.message()), HasSubstr("has expired"));
  // With the CA's revocation list naming it, the same signature is refused.
  const std::string crl_path = ::testing::TempDir() + "/checker_crl.pem";
  auto peer = VerifyCertificate(a->certificate_pem, (*ca)->certificate_pem(), kNow);
  ASSERT_TRUE(peer.ok());
  ASSERT_TRUE(WriteFileAtomically(crl_path, *(*ca)->MakeCrl({{peer->serial, kNow}}, kNow)).ok());
  auto revoked = RevocationList::Open(crl_path, (*ca)->certificate_pem());
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  auto strict = SignatureChecker::Create((*ca)->certificate_pem(), *revoked);
  EXPECT_THAT(
      std::string((*strict)
                      ->Check("bank-a", silo, a->certificate_pem, "round 3 keys", signature, kNow)
                      .message()),
      HasSubstr("was revoked"));
  EXPECT_FALSE(MessageSigner::Create("not a key").ok());
  EXPECT_FALSE(SignatureChecker::Create("not a certificate").ok());
}

}  // namespace
}  // namespace fedsilo::secure
