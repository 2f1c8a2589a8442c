// FileLock: an exclusive advisory lock (flock) on a file, held while the
// object lives. The lock goes with the descriptor, so a process that dies
// releases it; a second holder, in this process or another, is refused.
#ifndef FEDSILO_CORE_FILE_LOCK_H_
#define FEDSILO_CORE_FILE_LOCK_H_

#include <string>

#include "core/status.h"

namespace fedsilo {

class FileLock {
 public:
  // Creates `path` (mode 0600) if needed and locks it. FailedPrecondition
  // "<held> (<path> is locked)" when another holds it.
  static StatusOr<FileLock> Acquire(const std::string& path, const std::string& held);

  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace fedsilo

#endif  // FEDSILO_CORE_FILE_LOCK_H_
