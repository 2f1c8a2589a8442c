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

// Writes all of `contents` to the new private file `path` and fsyncs it.
Status WriteAndSync(const std::string& path, absl::string_view contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  auto fail = [&](absl::string_view what) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(err)));
  };
  // A temporary file left by an earlier crash keeps its mode: set it.
  if (::fchmod(fd, 0600) != 0) return fail("chmod failed");
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write failed");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync failed");
  if (::close(fd) != 0) {
    return absl::InternalError(absl::StrCat(path, ": close failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const std::string tmp = path + ".tmp";
  if (Status written = WriteAndSync(tmp, contents); !written.ok()) {
    ::unlink(tmp.c_str());
    return written;
  }
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
  // Missing parents first, outermost first, each 0700.
  std::vector<fs::path> missing;
  for (fs::path p = fs::path(dir).lexically_normal(); !p.empty() && !fs::exists(p, ec);
       p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat(it->string(), ": cannot create folder: ", std::strerror(errno)));
    }
    if (::chmod(it->c_str(), 0700) != 0) {
      return absl::InternalError(absl::StrCat(it->string(), ": chmod: ", std::strerror(errno)));
    }
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": exists and is not a folder"));
  }
  if (missing.empty() && ::chmod(dir.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat(dir, ": chmod: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo
