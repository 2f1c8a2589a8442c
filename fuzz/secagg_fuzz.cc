// Secure aggregation's messages from outside the process: requests a
// (malicious) orchestrator sends a silo, and replies a (malicious) silo sends
// the orchestrator. Each is parsed and checked; nothing crashes, and a silo
// never answers a request after one it refused.
#include "fuzz_util.h"
#include "secure/secagg.h"

namespace {

fedsilo::ModelState Update() {
  fedsilo::ModelState s;
  (void)s.Add(fedsilo::Tensor::FromFloats("w", {3}, {0.5f, -1.f, 2.f}));
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  if (size == 0) return 0;
  fuzz::Parts parts(data + 1, size - 1);
  absl::string_view part;
  if (data[0] & 1) {
    // Silo side: up to five requests of one round.
    secure::SecAggSilo silo("silo-1");
    silo.SetInput("run", 1, Update(), 5);
    bool refused = false;
    for (int i = 0; i < 5 && parts.Next(&part); ++i) {
      StatusOr<std::string> reply = silo.Handle("run", 1, part);
      if (refused) FEDSILO_FUZZ_CHECK(!reply.ok());
      refused = refused || !reply.ok();
    }
    return 0;
  }
  // Orchestrator side: replies of silos in each stage.
  secure::SecAggParams params;
  params.threshold = 2;
  StatusOr<secure::SecAggRound> round =
      secure::SecAggRound::Create("run", 1, params, {"silo-1", "silo-2", "silo-3"}, Update());
  FEDSILO_FUZZ_CHECK(round.ok());
  const char* silos[] = {"silo-1", "silo-2", "silo-3"};
  int i = 0;
  for (; i < 3 && parts.Next(&part); ++i) (void)round->AcceptAdvertise(silos[i], part);
  if (!round->ShareKeysRequest().ok()) return 0;
  for (int j = 0; j < 3 && parts.Next(&part); ++j) (void)round->AcceptShareKeys(silos[j], part);
  if (!round->MaskedInputRequests().ok()) return 0;
  for (int j = 0; j < 3 && parts.Next(&part); ++j) (void)round->AcceptMaskedInput(silos[j], part);
  if (!round->ConsistencyRequest().ok()) return 0;
  for (int j = 0; j < 3 && parts.Next(&part); ++j) (void)round->AcceptConsistency(silos[j], part);
  if (!round->UnmaskRequest().ok()) return 0;
  for (int j = 0; j < 3 && parts.Next(&part); ++j) (void)round->AcceptUnmask(silos[j], part);
  (void)round->Finish();
  return 0;
}
