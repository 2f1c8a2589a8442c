// Helpers for the libFuzzer targets in this folder (see fuzz/README.md).
#ifndef FEDSILO_FUZZ_FUZZ_UTIL_H_
#define FEDSILO_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/string_view.h"

namespace fedsilo::fuzz {

inline absl::string_view Bytes(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

// A property of the decoder that must hold for every input: a failure is a
// crash that libFuzzer keeps as a reproducer.
#define FEDSILO_FUZZ_CHECK(condition)                                                    \
  do {                                                                                   \
    if (!(condition)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Writes `bytes` to the file `name` in a folder of this process's own (for
// decoders that read files) and returns its path.
inline std::string TempFile(const std::string& name, absl::string_view bytes) {
  static const std::string dir = [] {
    const std::string d = std::filesystem::temp_directory_path().string() + "/fedsilo-fuzz-" +
                          std::to_string(getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
  return path;
}

// Reads input as a sequence of length-prefixed parts (2 bytes little-endian,
// then that many bytes; a short tail is the last part).
class Parts {
 public:
  Parts(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool Next(absl::string_view* part) {
    if (at_ >= size_) return false;
    size_t n = size_ - at_;
    if (n >= 2) {
      const size_t announced = data_[at_] | (size_t{data_[at_ + 1]} << 8);
      at_ += 2;
      n = std::min(announced, size_ - at_);
    } else {
      at_ = size_;
      return false;
    }
    *part = absl::string_view(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return true;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

}  // namespace fedsilo::fuzz

#endif  // FEDSILO_FUZZ_FUZZ_UTIL_H_
