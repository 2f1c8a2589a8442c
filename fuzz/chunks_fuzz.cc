// Chunk reassembly as a silo's stream drives it: an announced size, then
// chunks of any length, in any number, marked last or not. The assembler
// never holds more than was announced and completes only at exactly that.
#include <cstring>

#include "fuzz_util.h"
#include "transport/chunks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  if (size < 3) return 0;
  // The caller bounds the announced size (orchestrator_service.cc): 64 KiB here.
  const uint64_t expected = (data[0] | (uint64_t{data[1]} << 8)) % 65537;
  fuzz::Parts parts(data + 2, size - 2);
  transport::ChunkAssembler assembler;
  assembler.Begin(expected, "fuzzed payload");
  absl::string_view part;
  uint64_t fed = 0;
  while (parts.Next(&part)) {
    fedsilo::v1::Chunk chunk;
    const bool last = !part.empty() && (part[0] & 1);
    if (!part.empty()) part.remove_prefix(1);
    chunk.set_data(std::string(part));
    chunk.set_last(last);
    Status added = assembler.Add(chunk);
    fed += part.size();
    if (!added.ok()) {
      FEDSILO_FUZZ_CHECK(fed > expected || (last && fed != expected));
      FEDSILO_FUZZ_CHECK(!assembler.active() && !assembler.complete());
      return 0;
    }
    if (assembler.complete()) {
      FEDSILO_FUZZ_CHECK(fed == expected);
      FEDSILO_FUZZ_CHECK(assembler.Take().size() == expected);
      return 0;
    }
    FEDSILO_FUZZ_CHECK(fed <= expected);
  }
  return 0;
}
