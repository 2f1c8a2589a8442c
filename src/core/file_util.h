// Small file helpers with Status errors that name the file.
#ifndef FEDSILO_CORE_FILE_UTIL_H_
#define FEDSILO_CORE_FILE_UTIL_H_

#include <string>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo {

// Reads a whole file. NotFound if it does not exist, Internal on read errors.
StatusOr<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` through a temporary file of its own beside it
// (`path`.XXXXXX.tmp, created exclusively) and a rename, so readers see either
// the old or the new file, never a partial one, even if the process is killed
// mid-write. Durable when it returns: the file's bytes and the rename are
// flushed to the disk (fsync of the file, then of its folder), so a crash or a
// power cut right after cannot bring the old contents back. The file is
// private (mode 0600) whatever the umask.
Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Creates `dir` and its missing parents with mode 0700 whatever the umask.
// Folders that already exist are left as they are (they may be the user's
// own); see OthersMayRead.
Status MakePrivateDir(const std::string& dir);

// Whether group or others have any access to `path`.
bool OthersMayRead(const std::string& path);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_FILE_UTIL_H_
