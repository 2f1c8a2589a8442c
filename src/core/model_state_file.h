// The versioned binary file format for model states and checkpoints (".fsm").
//
// Layout, all integers little-endian:
//   magic "FSMS" | u32 format version (1) | u32 flags (0)
//   u32 metadata entries, each: u32 key length, key, u32 value length, value
//   u32 tensors, each: u32 name length, name, u8 dtype, u8 rank, u16 zero,
//                      i64 dims[rank], u64 data length, data
//   u32 CRC-32 of every byte before it
// Readers reject other magics, newer versions, bad sizes and checksum mismatches.
#ifndef FEDSILO_CORE_MODEL_STATE_FILE_H_
#define FEDSILO_CORE_MODEL_STATE_FILE_H_

#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo {

inline constexpr uint32_t kModelStateFormatVersion = 1;

// Free-form string metadata stored beside the tensors (round, run id, ...).
using ModelMetadata = std::map<std::string, std::string>;

struct ModelFile {
  ModelState state;
  ModelMetadata metadata;
};

std::string SerializeModelState(const ModelState& state, const ModelMetadata& metadata = {});

// Parses bytes written by SerializeModelState. `source` names the origin in
// errors ("runs/x/final_model.fsm: truncated: ..."). Errors are DataLoss for
// truncated or corrupted input, InvalidArgument for a file that is not a model
// state or comes from a newer format version.
StatusOr<ModelFile> ParseModelState(absl::string_view bytes, absl::string_view source);

// Writes atomically: a temporary file in the same folder, then rename, so that a
// crash never leaves a half-written model behind. Sealed (encrypted) when a
// FileSealer is installed (core/file_seal.h); reading opens sealed files.
Status WriteModelStateFile(const std::string& path, const ModelState& state,
                           const ModelMetadata& metadata = {});
StatusOr<ModelFile> ReadModelStateFile(const std::string& path);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_MODEL_STATE_FILE_H_
