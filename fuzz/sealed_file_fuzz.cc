// Sealed files at rest (XChaCha20-Poly1305 with a key id header): any bytes
// either open under the key ring or are refused; nothing forged opens.
#include "core/file_seal.h"
#include "fuzz_util.h"
#include "secure/storage_keys.h"

namespace {

const fedsilo::secure::AeadFileSealer& Sealer() {
  static const fedsilo::secure::AeadFileSealer* sealer = [] {
    fedsilo::secure::KeyRing ring;
    ring.current = "k1";
    ring.keys["k1"].fill(7);
    ring.keys["k2"].fill(9);
    return new fedsilo::secure::AeadFileSealer(ring);
  }();
  return *sealer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  const absl::string_view bytes = fuzz::Bytes(data, size);
  (void)secure::AeadFileSealer::KeyIdOf(bytes, "fuzz");
  (void)secure::AeadFileSealer::HeaderOf(bytes, "fuzz");
  StatusOr<std::string> opened = Sealer().Open(bytes, "model.fsm", "fuzz");
  // Opening needs the tag of a key in the ring: the fuzzer cannot forge one,
  // so only an input that is itself a sealing (a seed) opens.
  if (opened.ok()) {
    FEDSILO_FUZZ_CHECK(Sealer().Open(Sealer().Seal(*opened, "model.fsm"), "model.fsm", "again").ok());
  }
  // And its plaintext, sealed, always opens to itself, under its name only.
  const std::string sealed = Sealer().Seal(bytes, "model.fsm");
  StatusOr<std::string> round = Sealer().Open(sealed, "model.fsm", "round");
  FEDSILO_FUZZ_CHECK(round.ok() && *round == bytes);
  FEDSILO_FUZZ_CHECK(!Sealer().Open(sealed, "other.fsm", "moved").ok());
  return 0;
}
