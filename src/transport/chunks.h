// Models travel as .fsm bytes cut into Chunk messages of at most kChunkBytes,
// so any model size goes through without a large gRPC message. (The receive
// limit is raised only for a job's TorchScript module, which travels whole.)
#ifndef FEDSILO_TRANSPORT_CHUNKS_H_
#define FEDSILO_TRANSPORT_CHUNKS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "core/status.h"
#include "fedsilo/v1/federation.pb.h"

namespace fedsilo::transport {

inline constexpr size_t kChunkBytes = 1 << 20;  // well under gRPC's 4 MiB default
// The largest TorchScript module a job may carry (it travels in one message).
inline constexpr size_t kMaxTorchScriptBytes = size_t{64} << 20;
// The largest reply of a task that returns no model (statistics, scores),
// and the share-and-key part of a secure-aggregation reply.
inline constexpr uint64_t kMaxSmallReplyBytes = uint64_t{64} << 20;

// Calls `write` with each chunk of `bytes` (at least one, the last marked);
// stops and returns false when a write fails.
bool ForEachChunk(const std::string& bytes,
                  const std::function<bool(const fedsilo::v1::Chunk&)>& write);

// Reassembles chunks into exactly the announced number of bytes.
class ChunkAssembler {
 public:
  // REQUIRES: called before Add(), with a size the caller has bounded.
  // `what` names the payload in errors.
  void Begin(uint64_t expected_bytes, std::string what);
  // InvalidArgument when the chunks exceed the announced size, or the last
  // one arrives short of it.
  Status Add(const fedsilo::v1::Chunk& chunk);
  bool active() const { return active_; }
  bool complete() const { return complete_; }
  // The payload; resets the assembler. REQUIRES: complete().
  std::string Take();

 private:
  std::string data_;
  uint64_t expected_ = 0;
  std::string what_;
  bool active_ = false;
  bool complete_ = false;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_CHUNKS_H_
