#include "tracking/run_directory.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <cctype>
#include <ctime>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"

namespace fedsilo::tracking {

StatusOr<RunDirectory> RunDirectory::Create(const std::string& workdir, const std::string& job_name,
                                            std::chrono::system_clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &utc);
  // Keep the id safe as a folder name whatever the job is called.
  std::string safe_name = job_name.empty() ? "job" : job_name;
  for (char& c : safe_name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '-';
  }
  std::random_device random;
  namespace fs = std::filesystem;
  for (int attempt = 0; attempt < 16; ++attempt) {
    const std::string id = absl::StrFormat("%s-%s-%04x", safe_name, stamp, random() & 0xffff);
    const fs::path dir = fs::path(workdir) / "runs" / id;
    FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir.parent_path().string()));
    if (::mkdir(dir.c_str(), 0700) == 0) {  // EEXIST if another run took the id
      if (::chmod(dir.c_str(), 0700) != 0) {  // 0700 whatever the umask
        return absl::InternalError(absl::StrCat(dir.string(), ": chmod: ", std::strerror(errno)));
      }
      FEDSILO_RETURN_IF_ERROR(MakePrivateDir((dir / "checkpoints").string()));
      return RunDirectory(id, dir.string());
    }
    if (errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat(dir.string(), ": cannot create folder: ", std::strerror(errno)));
    }
  }
  return absl::InternalError("could not find an unused run id");
}

StatusOr<RunDirectory> RunDirectory::Open(const std::string& workdir, const std::string& run_id) {
  const std::string dir = workdir + "/runs/" + run_id;
  std::error_code ec;
  if (run_id.empty() || !std::filesystem::is_directory(dir + "/checkpoints", ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such run folder"));
  }
  return RunDirectory(run_id, dir);
}

std::string RunDirectory::CheckpointPath(int round) const {
  return absl::StrFormat("%s/checkpoints/round-%04d.fsm", path_, round);
}

std::string RunDirectory::StrategyStatePath(int round) const {
  std::string path = CheckpointPath(round);
  return path.substr(0, path.size() - 4) + ".strategy.fsm";
}

Status RunDirectory::WriteCheckpoint(int round, const ModelState& state,
                                     const ModelMetadata& metadata) const {
  return WriteModelStateFile(CheckpointPath(round), state, metadata);
}

}  // namespace fedsilo::tracking
