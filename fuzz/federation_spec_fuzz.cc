// The federation file the operator provisions from (and kits' copies of it).
#include "fuzz_util.h"
#include "secure/provisioner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  if (size > 64 * 1024) return 0;
  StatusOr<secure::FederationSpec> spec =
      secure::ParseFederationSpec(fuzz::Bytes(data, size), "fuzz.yaml");
  if (spec.ok()) FEDSILO_FUZZ_CHECK(!spec->name.empty() && !spec->participants.empty());
  return 0;
}
