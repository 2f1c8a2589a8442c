#include "core/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fedsilo {

StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, expected a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read error"));
  return std::move(out).str();
}

namespace {

// fsync() of `path` (a file or a folder), with an error naming it.
Status Sync(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0)
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    return absl::InternalError(absl::StrCat(path, ": fsync failed: ", std::strerror(err)));
  return absl::OkStatus();
}

// Writes all of `contents` to a new private file next to `path` (made with
// O_EXCL under a name of its own, so that neither another writer nor a link
// or pipe planted there can share it), fsyncs it and returns its name.
StatusOr<std::string> WriteTemporary(const std::string& path, absl::string_view contents) {
  std::string tmp = path + ".XXXXXX.tmp";
  const int fd = ::mkostemps(tmp.data(), 4, O_CLOEXEC);  // mode 0600
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(path, ".tmp: cannot create: ", std::strerror(errno)));
  }
  auto fail = [&](absl::string_view what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(tmp, ": ", what, ": ", std::strerror(err)));
  };
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write failed");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(tmp, ": close failed: ", std::strerror(err)));
  }
  return tmp;
}

}  // namespace

Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  FEDSILO_ASSIGN_OR_RETURN(const std::string tmp, WriteTemporary(path, contents));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  std::string folder = std::filesystem::path(path).parent_path().string();
  return Sync(folder.empty() ? std::string(".") : folder, O_RDONLY | O_DIRECTORY);
}

Status MakePrivateDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // Missing folders, outermost first, each made 0700. Existing ones are left
  // as they are: they may be the user's own.
  std::vector<fs::path> missing;
  for (fs::path p = fs::path(dir).lexically_normal(); !p.empty() && !fs::exists(p, ec);
       p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;  // made by someone else meanwhile: not ours
      return absl::InternalError(
          absl::StrCat(it->string(), ": cannot create folder: ", std::strerror(errno)));
    }
    // mkdir's mode is cut by the umask; 0700 whatever it is.
    const int fd = ::open(it->c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || ::fchmod(fd, 0700) != 0) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      return absl::InternalError(absl::StrCat(it->string(), ": chmod: ", std::strerror(err)));
    }
    ::close(fd);
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": exists and is not a folder"));
  }
  return absl::OkStatus();
}

bool OthersMayRead(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0;
}

}  // namespace fedsilo
