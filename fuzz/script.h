// Fuzz inputs read as scripts: a sequence of operations, each an op code
// followed by its arguments, for the targets that drive a service through a
// conversation (silo_stream, jobs_api). `Script` reads them; `ScriptWriter`
// writes the seeds (make_seeds.cc) in the same encoding, so the two cannot
// drift apart.
#ifndef FEDSILO_FUZZ_SCRIPT_H_
#define FEDSILO_FUZZ_SCRIPT_H_

#include <cstdint>
#include <string>

namespace fedsilo::fuzz {

// Reads a script. Past the end every read returns zero or empty, so a
// truncated input is still a valid (shorter) script.
class Script {
 public:
  Script(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool done() const { return at_ >= size_; }
  uint8_t Byte() { return at_ < size_ ? data_[at_++] : 0; }
  bool Flag() { return Byte() & 1; }
  // Two bytes, low first. (One statement each: the order in which the
  // operands of `|` are evaluated is unspecified, and gcc and clang differ.)
  uint16_t Short() {
    const uint16_t low = Byte();
    const uint16_t high = Byte();
    return static_cast<uint16_t>(low | (high << 8));
  }
  // A size or count as a hostile peer would choose one: zero, small, the
  // `hint` the caller expects (e.g. the size of what will follow), one past
  // it, a huge power of two, or any 64-bit value.
  uint64_t Number(uint64_t hint = 0) {
    switch (Byte() % 8) {
      case 0:
        return 0;
      case 1:
        return Byte();
      case 2:
      case 3:
        return Short();
      case 4:
        return hint;
      case 5:
        return hint + 1;
      case 6:
        return uint64_t{1} << (32 + Byte() % 31);  // up to 2^62
      default: {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | Byte();
        return v;
      }
    }
  }
  // A length byte (or two, with a flag in the first) then that many bytes:
  // at most `most`.
  std::string Bytes(size_t most = 255) {
    size_t n = Byte();
    if (n == 255) n = Short();
    if (n > most) n = most;
    if (n > size_ - at_) n = at_ < size_ ? size_ - at_ : 0;
    std::string out(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

// Writes what Script reads.
class ScriptWriter {
 public:
  ScriptWriter& Byte(uint8_t b) {
    out_.push_back(static_cast<char>(b));
    return *this;
  }
  ScriptWriter& Flag(bool f) { return Byte(f ? 1 : 0); }
  ScriptWriter& Small(uint8_t n) { return Byte(1).Byte(n); }  // Number() == n
  ScriptWriter& Hint() { return Byte(4); }                    // Number(hint) == hint
  ScriptWriter& Bytes(const std::string& b) {
    if (b.size() < 255) {
      Byte(static_cast<uint8_t>(b.size()));
    } else {
      Byte(255).Byte(b.size() & 0xff).Byte((b.size() >> 8) & 0xff);
    }
    out_ += b;
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

// The silo_stream target's operations: what the hostile silo sends on its
// stream, and what the orchestrator does meanwhile.
enum class StreamOp : uint8_t {
  kHello,         // datasets..., version
  kHeartbeat,     // millis
  kResult,        // echo flags, update_bytes, num_examples, metrics, private
  kSecureReply,   // echo flags, payload_bytes
  kChunk,         // data, last
  kUpload,        // the input's model as chunks: chunk size, corrupt flag
  kFailed,        // echo flags, reason
  kRaw,           // bytes parsed as a SiloMessage
  kFit,           // task kind: the orchestrator sends a task and waits
  kFetch,         // the orchestrator pulls the last result's update
  kSecureStep,    // payload: the orchestrator sends a secure-aggregation step
  kCancel,        // echo flag: the orchestrator cancels a run
  kReconnect,     // the silo opens another stream (the older stays open)
  kClose,         // the silo closes its newest stream
  kWhoAmI,        // name, kind: any caller asks who it is
  kVerticalStep,  // payload: the orchestrator sends a vertical job's step
  kCount
};

// Echo flags of kResult, kSecureReply and kFailed: which of the task's
// fields the reply copies (all three: it answers the task).
inline constexpr uint8_t kEchoJob = 1, kEchoRound = 2, kEchoNonce = 4, kEchoAll = 7;

// The jobs_api target's operations: calls of the user-facing Jobs service,
// each by a caller the input picks (script byte: Callers in jobs_api_fuzz.cc).
enum class JobsOp : uint8_t {
  kSubmit,    // caller, job YAML, TorchScript module bytes
  kList,      // caller
  kGet,       // caller, job
  kLogs,      // caller, job, after
  kAbort,     // caller, job, reason
  kDownload,  // caller, job
  kListRuns,  // caller, experiment
  kGetRun,    // caller, job
  kRaw,       // caller, method, request bytes (parsed by the service)
  kFinish,    // (caller, unused), job, size: the orchestrator ends a job with a final model
  kCount
};

}  // namespace fedsilo::fuzz

#endif  // FEDSILO_FUZZ_SCRIPT_H_
