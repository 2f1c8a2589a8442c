#include "core/model_state_file.h"

#include <zlib.h>

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "core/file_util.h"

namespace fedsilo {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the .fsm writer copies integers as-is and assumes a little-endian host");

constexpr char kMagic[4] = {'F', 'S', 'M', 'S'};
constexpr int kMaxRank = 8;

uint32_t Crc32(absl::string_view bytes) {
  uLong crc = crc32_z(0L, Z_NULL, 0);
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size());
  return static_cast<uint32_t>(crc);
}

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void PutString(std::string& out, absl::string_view s) {
  Put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

// Bounds-checked reader over the file's bytes; every failure is "truncated".
class Reader {
 public:
  Reader(absl::string_view bytes, absl::string_view source) : bytes_(bytes), source_(source) {}

  template <typename T>
  Status Get(T* value, absl::string_view what) {
    FEDSILO_RETURN_IF_ERROR(Need(sizeof(T), what));
    std::memcpy(value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  Status GetString(std::string* value, absl::string_view what) {
    uint32_t length = 0;
    FEDSILO_RETURN_IF_ERROR(Get(&length, what));
    FEDSILO_RETURN_IF_ERROR(Need(length, what));
    value->assign(bytes_.data() + pos_, length);
    pos_ += length;
    return absl::OkStatus();
  }

  Status GetBytes(std::byte* out, size_t n, absl::string_view what) {
    FEDSILO_RETURN_IF_ERROR(Need(n, what));
    std::memcpy(out, bytes_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

  size_t remaining() const { return bytes_.size() - pos_; }

 private:
  Status Need(size_t n, absl::string_view what) {
    if (remaining() < n) {
      return absl::DataLossError(absl::StrCat(source_, ": truncated model file: ", what, " needs ",
                                              n, " bytes at offset ", pos_, ", only ", remaining(),
                                              " left"));
    }
    return absl::OkStatus();
  }

  absl::string_view bytes_;
  absl::string_view source_;
  size_t pos_ = 0;
};

}  // namespace

std::string SerializeModelState(const ModelState& state, const ModelMetadata& metadata) {
  size_t size = 64;
  for (const Tensor& t : state.tensors()) size += 32 + t.name().size() + t.num_bytes();
  std::string out;
  out.reserve(size);
  out.append(kMagic, sizeof(kMagic));
  Put<uint32_t>(out, kModelStateFormatVersion);
  Put<uint32_t>(out, 0);  // flags
  Put<uint32_t>(out, static_cast<uint32_t>(metadata.size()));
  for (const auto& [key, value] : metadata) {
    PutString(out, key);
    PutString(out, value);
  }
  Put<uint32_t>(out, static_cast<uint32_t>(state.size()));
  for (const Tensor& t : state.tensors()) {
    PutString(out, t.name());
    Put<uint8_t>(out, static_cast<uint8_t>(t.dtype()));
    Put<uint8_t>(out, static_cast<uint8_t>(t.shape().size()));
    Put<uint16_t>(out, 0);
    for (int64_t d : t.shape()) Put<int64_t>(out, d);
    Put<uint64_t>(out, t.num_bytes());
    out.append(reinterpret_cast<const char*>(t.data()), t.num_bytes());
  }
  Put<uint32_t>(out, Crc32(out));
  return out;
}

StatusOr<ModelFile> ParseModelState(absl::string_view bytes, absl::string_view source) {
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    if (bytes.size() < sizeof(kMagic) && absl::string_view(kMagic, bytes.size()) == bytes) {
      return absl::DataLossError(
          absl::StrCat(source, ": truncated model file (", bytes.size(), " bytes)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a fedsilo model file (bad magic number)"));
  }
  Reader header(bytes.substr(sizeof(kMagic)), source);
  uint32_t version = 0;
  FEDSILO_RETURN_IF_ERROR(header.Get(&version, "format version"));
  if (version == 0 || version > kModelStateFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": model file format version ", version,
                                                   " is not supported (this build reads up to ",
                                                   kModelStateFormatVersion, ")"));
  }
  if (bytes.size() < sizeof(kMagic) + 4 + 4) {
    return absl::DataLossError(
        absl::StrCat(source, ": truncated model file (", bytes.size(), " bytes)"));
  }
  // The checksum covers everything before it; check it first so that a flipped
  // bit anywhere is reported as corruption, not as some odd field value.
  const absl::string_view body = bytes.substr(0, bytes.size() - 4);
  uint32_t stored_crc = 0;
  std::memcpy(&stored_crc, bytes.data() + body.size(), 4);

  Reader in(body.substr(sizeof(kMagic) + 4), source);
  uint32_t flags = 0, num_metadata = 0, num_tensors = 0;
  ModelFile file;
  Status parsed = [&]() -> Status {
    FEDSILO_RETURN_IF_ERROR(in.Get(&flags, "flags"));
    FEDSILO_RETURN_IF_ERROR(in.Get(&num_metadata, "metadata count"));
    for (uint32_t i = 0; i < num_metadata; ++i) {
      std::string key, value;
      FEDSILO_RETURN_IF_ERROR(in.GetString(&key, "metadata key"));
      FEDSILO_RETURN_IF_ERROR(in.GetString(&value, "metadata value"));
      file.metadata[key] = value;
    }
    FEDSILO_RETURN_IF_ERROR(in.Get(&num_tensors, "tensor count"));
    for (uint32_t i = 0; i < num_tensors; ++i) {
      std::string name;
      uint8_t dtype = 0, rank = 0;
      uint16_t reserved = 0;
      FEDSILO_RETURN_IF_ERROR(in.GetString(&name, "tensor name"));
      FEDSILO_RETURN_IF_ERROR(in.Get(&dtype, "tensor dtype"));
      FEDSILO_RETURN_IF_ERROR(in.Get(&rank, "tensor rank"));
      FEDSILO_RETURN_IF_ERROR(in.Get(&reserved, "tensor header"));
      if (!IsValidDType(dtype) || rank > kMaxRank) {
        return absl::DataLossError(absl::StrCat(source, ": corrupted model file: tensor '", name,
                                                "' has dtype ", int{dtype}, " and rank ",
                                                int{rank}));
      }
      std::vector<int64_t> shape(rank);
      uint64_t elements = 1;
      for (auto& d : shape) {
        FEDSILO_RETURN_IF_ERROR(in.Get(&d, "tensor shape"));
        if (d < 0 || (d > 0 && elements > std::numeric_limits<uint64_t>::max() / 8 /
                                              static_cast<uint64_t>(d))) {
          return absl::DataLossError(absl::StrCat(source, ": corrupted model file: tensor '", name,
                                                  "' has shape ", ShapeToString(shape)));
        }
        elements *= static_cast<uint64_t>(d);
      }
      uint64_t data_length = 0;
      FEDSILO_RETURN_IF_ERROR(in.Get(&data_length, "tensor data length"));
      const uint64_t expected = elements * DTypeSize(static_cast<DType>(dtype));
      if (data_length != expected) {
        return absl::DataLossError(absl::StrCat(source, ": corrupted model file: tensor '", name,
                                                "' has ", data_length, " data bytes, its shape ",
                                                ShapeToString(shape), " needs ", expected));
      }
      if (data_length > in.remaining()) {
        return absl::DataLossError(absl::StrCat(source, ": truncated model file: tensor '", name,
                                                "' needs ", data_length, " bytes, only ",
                                                in.remaining(), " left"));
      }
      Tensor t(name, static_cast<DType>(dtype), shape);
      FEDSILO_RETURN_IF_ERROR(in.GetBytes(t.data(), t.num_bytes(), "tensor data"));
      Status added = file.state.Add(std::move(t));
      if (!added.ok()) {
        return absl::DataLossError(
            absl::StrCat(source, ": corrupted model file: ", added.message()));
      }
    }
    if (in.remaining() != 0) {
      return absl::DataLossError(absl::StrCat(source, ": corrupted model file: ", in.remaining(),
                                              " unexpected bytes after the last tensor"));
    }
    return absl::OkStatus();
  }();
  if (Crc32(body) != stored_crc) {
    // A short file also fails the checksum; report what is most useful.
    if (!parsed.ok()) return parsed;
    return absl::DataLossError(
        absl::StrCat(source,
                     ": corrupted model file: checksum mismatch (file was modified or "
                     "damaged)"));
  }
  FEDSILO_RETURN_IF_ERROR(parsed);
  return file;
}

Status WriteModelStateFile(const std::string& path, const ModelState& state,
                           const ModelMetadata& metadata) {
  return WriteProtectedFile(path, SerializeModelState(state, metadata));
}

StatusOr<ModelFile> ReadModelStateFile(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadProtectedFile(path));
  return ParseModelState(bytes, path);
}

}  // namespace fedsilo
