// Small file helpers with Status errors that name the file.
#ifndef FEDSILO_CORE_FILE_UTIL_H_
#define FEDSILO_CORE_FILE_UTIL_H_

#include <string>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo {

// Reads a whole file. NotFound if it does not exist, Internal on read errors.
StatusOr<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` through a temporary file and a rename, so readers
// see either the old or the new file, never a partial one.
Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// WriteFileAtomically, and durable when it returns: the file's bytes and the
// rename are flushed to the disk (fsync of the file, then of its folder), so a
// crash or a power cut right after cannot bring the old contents back. For
// records that must never go backwards, such as a privacy ledger.
Status WriteFileDurably(const std::string& path, absl::string_view contents);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_FILE_UTIL_H_
