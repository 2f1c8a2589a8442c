// The transport benchmark's baseline: the time to push a model's bytes to N
// silo processes and the same bytes back over plain mutual-TLS connections
// (OpenSSL, TLS 1.3, the federation's own certificates), with no gRPC, no
// protobuf and no model parsing -- what the network stack alone costs.
#ifndef FEDSILO_BENCH_TLS_PUSH_H_
#define FEDSILO_BENCH_TLS_PUSH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo::bench {

// Starts one `fedsilo-bench tls-push-client` process per kit in `silo_kits`,
// then `repeats` times sends `bytes` to every client at once and reads
// `bytes` back from each. Returns the seconds of each repetition.
StatusOr<std::vector<double>> MeasureTlsPush(const std::string& orchestrator_kit,
                                             const std::vector<std::string>& silo_kits,
                                             uint64_t bytes, int repeats);

// The client process: connects to 127.0.0.1:`port` with the kit's
// certificate, then `repeats` times reads `bytes` and writes them back.
int RunTlsPushClient(const std::string& kit_dir, int port, uint64_t bytes, int repeats);

}  // namespace fedsilo::bench

#endif  // FEDSILO_BENCH_TLS_PUSH_H_
