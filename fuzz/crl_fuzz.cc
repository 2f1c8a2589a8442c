// A kit's revocation list (crl.pem), which anyone who can write the kit's
// folder controls: it parses and verifies against the CA, or is refused.
#include <chrono>
#include <memory>

#include "fuzz_util.h"
#include "secure/certificate_authority.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  static const std::string* ca_pem = [] {
    auto ca = secure::CertificateAuthority::Create("fuzz", 30, std::chrono::system_clock::now());
    return new std::string((*ca)->certificate_pem());
  }();
  (void)secure::ReadCrl(std::string(fuzz::Bytes(data, size)), *ca_pem);
  (void)secure::DescribeCertificate(std::string(fuzz::Bytes(data, size)));
  return 0;
}
