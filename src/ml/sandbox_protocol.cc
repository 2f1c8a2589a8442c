#include "ml/sandbox_protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace fedsilo::ml::sandbox {

Writer& Writer::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return *this;
}

Writer& Writer::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return *this;
}

Writer& Writer::F64(double v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(bits));
  return U64(bits);
}

Writer& Writer::Bytes(absl::string_view b) {
  U64(b.size());
  out_.append(b.data(), b.size());
  return *this;
}

Writer& Writer::I64s(const std::vector<int64_t>& v) {
  U64(v.size());
  for (int64_t x : v) I64(x);
  return *this;
}

Writer& Writer::Floats(const float* v, size_t n) {
  U64(n);
  out_.append(reinterpret_cast<const char*>(v), n * sizeof(float));  // little-endian hosts
  return *this;
}

bool Reader::Take(size_t n, const char** at) {
  if (!ok_ || n > in_.size()) {
    ok_ = false;
    return false;
  }
  *at = in_.data();
  in_.remove_prefix(n);
  return true;
}

uint32_t Reader::U32() {
  const char* p = nullptr;
  if (!Take(4, &p)) return 0;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

uint64_t Reader::U64() {
  const char* p = nullptr;
  if (!Take(8, &p)) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

double Reader::F64() {
  const uint64_t bits = U64();
  double v = 0;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

std::string Reader::Bytes() {
  const uint64_t n = U64();
  const char* p = nullptr;
  if (n > in_.size() || !Take(static_cast<size_t>(n), &p)) {
    ok_ = false;
    return std::string();
  }
  return std::string(p, static_cast<size_t>(n));
}

std::vector<int64_t> Reader::I64s() {
  const uint64_t n = U64();
  if (n > in_.size() / 8) {  // before allocating: what is left must hold them
    ok_ = false;
    return {};
  }
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t& x : v) x = I64();
  return v;
}

std::vector<float> Reader::Floats() {
  const uint64_t n = U64();
  const char* p = nullptr;
  if (n > in_.size() / sizeof(float) || !Take(static_cast<size_t>(n) * sizeof(float), &p)) {
    ok_ = false;
    return {};
  }
  std::vector<float> v(static_cast<size_t>(n));
  if (!v.empty()) std::memcpy(v.data(), p, v.size() * sizeof(float));
  return v;
}

namespace {

Status WriteAll(int fd, const char* data, size_t n, absl::string_view peer) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      return absl::UnavailableError(absl::StrCat(peer, " is gone (", std::strerror(errno), ")"));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

Status ReadAll(int fd, char* data, size_t n, std::chrono::steady_clock::time_point deadline,
               absl::string_view peer) {
  while (n > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(peer, " did not answer in time"));
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline check above ends it
    const ssize_t r = ::recv(fd, data, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return absl::UnavailableError(absl::StrCat(peer, " ended"));
    data += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

Status WriteFrame(int fd, Kind kind, absl::string_view payload, absl::string_view peer) {
  Writer header;
  header.U32(static_cast<uint32_t>(kind)).U64(payload.size());
  FEDSILO_RETURN_IF_ERROR(WriteAll(fd, header.str().data(), header.str().size(), peer));
  return WriteAll(fd, payload.data(), payload.size(), peer);
}

StatusOr<Frame> ReadFrame(int fd, uint64_t max_bytes,
                          std::chrono::steady_clock::time_point deadline, absl::string_view peer) {
  char header[12];
  FEDSILO_RETURN_IF_ERROR(ReadAll(fd, header, sizeof(header), deadline, peer));
  Reader r(absl::string_view(header, sizeof(header)));
  Frame frame;
  frame.kind = static_cast<Kind>(r.U32());
  const uint64_t length = r.U64();
  if (length > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        peer, " sent a frame of ", length, " bytes, more than the ", max_bytes, " expected"));
  }
  frame.payload.resize(static_cast<size_t>(length));
  FEDSILO_RETURN_IF_ERROR(ReadAll(fd, frame.payload.data(), frame.payload.size(), deadline, peer));
  return frame;
}

}  // namespace fedsilo::ml::sandbox
