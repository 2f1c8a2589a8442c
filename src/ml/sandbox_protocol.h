// What the sandbox's host (ml/sandbox.cc) and its worker
// (ml/sandbox_worker.cc) say to each other over their socket: frames of
// [u32 kind][u64 length][payload], payloads in a little binary encoding.
// The host trusts nothing the worker sends: every length is bounded before
// anything is allocated, and a reply must have the shape its request asks for.
//
// Internal to ml. Not thread-safe: one caller per socket.
#ifndef FEDSILO_ML_SANDBOX_PROTOCOL_H_
#define FEDSILO_ML_SANDBOX_PROTOCOL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo::ml::sandbox {

enum class Kind : uint32_t {
  // host -> worker
  kLoad = 1,      // module bytes, example shape (empty: no forward check), classes, check ops
  kData = 2,      // a data set: id, example shape, classes, labels, features
  kSetState = 3,  // a ModelState (.fsm bytes)
  kGetState = 4,  //
  kTrain = 5,     // data set id, indices, training config, objective
  kPredict = 6,   // data set id, indices
  kSave = 7,      // -> TorchScript bytes with the current weights
  // A vertical job's bottom model (ml/split_model.h), in place of a model:
  kSplitLoad = 8,       // module bytes, submodule, inputs, outputs, training config,
                        // check ops -> misfit, output shape, weights, parameters
  kSplitForward = 9,    // rows, train, values -> outputs
  kSplitBackward = 10,  // output gradient -> (the inputs' gradient, empty)
  kSplitRate = 11,      // learning rate
  // worker -> host
  kOk = 100,       // the reply's payload
  kError = 101,    // u32 code, message
  kRefused = 102,  // the op check: op, method
};

// A little-endian writer.
class Writer {
 public:
  Writer& U32(uint32_t v);
  Writer& U64(uint64_t v);
  Writer& I64(int64_t v) { return U64(static_cast<uint64_t>(v)); }
  Writer& F64(double v);
  Writer& Bytes(absl::string_view b);  // u64 length, then the bytes
  Writer& I64s(const std::vector<int64_t>& v);
  Writer& Floats(const float* v, size_t n);
  std::string& str() { return out_; }

 private:
  std::string out_;
};

// The matching reader. Each read fails (ok() turns false, values are zero)
// rather than reading past the end or taking a count larger than what is left.
class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  uint32_t U32();
  uint64_t U64();
  int64_t I64() { return static_cast<int64_t>(U64()); }
  double F64();
  std::string Bytes();
  std::vector<int64_t> I64s();
  std::vector<float> Floats();
  bool ok() const { return ok_; }
  bool done() const { return ok_ && in_.empty(); }

 private:
  bool Take(size_t n, const char** at);
  absl::string_view in_;
  bool ok_ = true;
};

struct Frame {
  Kind kind = Kind::kOk;
  std::string payload;
};

// Writes one frame. Internal error (naming `peer`) when the other end is gone.
Status WriteFrame(int fd, Kind kind, absl::string_view payload, absl::string_view peer);
// Reads one frame of at most `max_bytes`, waiting until `deadline`.
// Unavailable when the other end closed or died, DeadlineExceeded when it
// did not answer in time, InvalidArgument for a frame that is too large.
StatusOr<Frame> ReadFrame(int fd, uint64_t max_bytes,
                          std::chrono::steady_clock::time_point deadline, absl::string_view peer);

}  // namespace fedsilo::ml::sandbox

#endif  // FEDSILO_ML_SANDBOX_PROTOCOL_H_
