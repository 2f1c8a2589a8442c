// The model/checkpoint format (.fsm) as a silo or a disk hands it over: any
// bytes either parse or are refused, and what parses writes back the same.
#include "core/model_state_file.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  StatusOr<ModelFile> parsed = ParseModelState(fuzz::Bytes(data, size), "fuzz.fsm");
  if (!parsed.ok()) return 0;
  const std::string again = SerializeModelState(parsed->state, parsed->metadata);
  StatusOr<ModelFile> back = ParseModelState(again, "again.fsm");
  FEDSILO_FUZZ_CHECK(back.ok());
  FEDSILO_FUZZ_CHECK(SerializeModelState(back->state, back->metadata) == again);
  return 0;
}
