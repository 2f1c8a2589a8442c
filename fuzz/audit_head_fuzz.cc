// A silo's signed audit log head: a line of an anchors file
// (<state>/audit-anchors/SILO.jsonl, read by `fedsilo audit verify
// --anchors`), and the fields a silo sends in an AuditHead message. Either
// parses and verifies against the CA, or is refused; never a crash.
#include <chrono>
#include <memory>

#include "fuzz_util.h"
#include "secure/audit_log.h"
#include "secure/certificate_authority.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  static const secure::SignatureChecker* checker = [] {
    auto ca = secure::CertificateAuthority::Create("fuzz", 30, std::chrono::system_clock::now());
    return secure::SignatureChecker::Create((*ca)->certificate_pem())->release();
  }();
  const std::string bytes(fuzz::Bytes(data, size));
  StatusOr<secure::SignedAuditHead> line = secure::ParseAuditHeadLine(bytes, "fuzz");
  if (line.ok()) {
    (void)secure::CheckAuditHead(*line, *checker, secure::ParticipantKind::kSilo);
    (void)secure::AuditHeadLine(*line, 0);
  }
  // The message's fields, from the silo: the bytes as its certificate, and
  // as its signature.
  secure::SignedAuditHead sent;
  sent.federation = "fuzz";
  sent.participant = "silo-1";
  sent.head = {1, std::string(64, '0')};
  sent.unix_millis = 1796400000000;
  sent.certificate_pem = bytes;
  sent.signature = bytes;
  (void)secure::CheckAuditHead(sent, *checker, secure::ParticipantKind::kSilo);
  return 0;
}
