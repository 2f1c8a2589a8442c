#include "transport/chunks.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fedsilo::transport {

bool ForEachChunk(const std::string& bytes,
                  const std::function<bool(const fedsilo::v1::Chunk&)>& write) {
  size_t offset = 0;
  do {
    const size_t n = std::min(kChunkBytes, bytes.size() - offset);
    fedsilo::v1::Chunk chunk;
    chunk.set_data(bytes.data() + offset, n);
    offset += n;
    chunk.set_last(offset == bytes.size());
    if (!write(chunk)) return false;
  } while (offset < bytes.size());
  return true;
}

void ChunkAssembler::Begin(uint64_t expected_bytes, std::string what) {
  data_.clear();
  // Grown as bytes arrive: an announcement alone reserves little.
  data_.reserve(static_cast<size_t>(std::min<uint64_t>(expected_bytes, 16 << 20)));
  expected_ = expected_bytes;
  what_ = std::move(what);
  active_ = true;
  complete_ = false;
}

Status ChunkAssembler::Add(const fedsilo::v1::Chunk& chunk) {
  if (!active_) return absl::InvalidArgumentError("a chunk arrived without a header");
  if (data_.size() + chunk.data().size() > expected_) {
    active_ = false;
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": more bytes than the announced ", expected_));
  }
  data_.append(chunk.data());
  if (chunk.last()) {
    active_ = false;
    if (data_.size() != expected_) {
      return absl::InvalidArgumentError(absl::StrCat(what_, ": ", data_.size(), " bytes arrived, ",
                                                     expected_, " were announced"));
    }
    complete_ = true;
  }
  return absl::OkStatus();
}

std::string ChunkAssembler::Take() {
  complete_ = false;
  return std::move(data_);
}

}  // namespace fedsilo::transport
