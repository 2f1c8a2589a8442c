// ByteStore: read-only bytes shared by data sets, either a memory-mapped file
// (no copy; pages come from the page cache) or an owned vector. Thread-safe to
// read; immutable after construction.
#ifndef FEDSILO_ML_BYTE_STORE_H_
#define FEDSILO_ML_BYTE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo::ml {

class ByteStore {
 public:
  explicit ByteStore(std::vector<uint8_t> bytes) : owned_(std::move(bytes)) {}
  ~ByteStore();
  ByteStore(const ByteStore&) = delete;
  ByteStore& operator=(const ByteStore&) = delete;

  // The whole file: mapped read-only when it is a plain file, decompressed
  // into memory when its name ends in ".gz". NotFound naming the file (and
  // how to fetch the data sets) when it does not exist.
  static StatusOr<std::shared_ptr<const ByteStore>> ReadFile(const std::string& path);

  const uint8_t* data() const { return mapped_ != nullptr ? mapped_ : owned_.data(); }
  size_t size() const { return mapped_ != nullptr ? mapped_size_ : owned_.size(); }

 private:
  ByteStore() = default;

  std::vector<uint8_t> owned_;
  const uint8_t* mapped_ = nullptr;
  size_t mapped_size_ = 0;
};

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_BYTE_STORE_H_
