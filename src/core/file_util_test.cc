#include "core/file_util.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace fedsilo {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/file_util_" + name + "." +
                          std::to_string(::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// Restores the umask when it goes out of scope.
class Umask {
 public:
  explicit Umask(mode_t mask) : old_(::umask(mask)) {}
  ~Umask() { ::umask(old_); }

 private:
  mode_t old_;
};

TEST(FileUtilTest, WrittenFilesArePrivateWhateverTheUmask) {
  const std::string dir = TempDir("mode");
  Umask open_umask(0);  // would give 0666 to a file created the usual way
  const std::string path = dir + "/ledger.json";
  ASSERT_TRUE(WriteFileAtomically(path, "one").ok());
  EXPECT_EQ(ModeOf(path), 0600u);
  // Replacing a file another program made readable makes it private again.
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  ASSERT_TRUE(WriteFileAtomically(path, "two").ok());
  EXPECT_EQ(ModeOf(path), 0600u);
  EXPECT_EQ(*ReadFile(path), "two");
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().extension(), ".json") << "left behind: " << e.path();
  }
}

TEST(FileUtilTest, PrivateFoldersAreMadeWithTheirParentsAndExistingOnesLeftAlone) {
  const std::string dir = TempDir("dirs");
  Umask open_umask(0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  const std::string deep = dir + "/a/b/state";
  ASSERT_TRUE(MakePrivateDir(deep).ok());
  for (const std::string& d : {dir + "/a", dir + "/a/b", deep}) EXPECT_EQ(ModeOf(d), 0700u) << d;
  EXPECT_EQ(ModeOf(dir), 0755u);  // an existing parent is left alone
  EXPECT_TRUE(OthersMayRead(dir));
  EXPECT_FALSE(OthersMayRead(deep));
  // An existing folder (perhaps the user's home, given as a state folder) is
  // not changed either.
  ASSERT_EQ(::chmod(deep.c_str(), 0755), 0);
  ASSERT_TRUE(MakePrivateDir(deep).ok());
  EXPECT_EQ(ModeOf(deep), 0755u);

  const std::string file = dir + "/file";
  ASSERT_TRUE(WriteFileAtomically(file, "x").ok());
  Status not_a_folder = MakePrivateDir(file);
  EXPECT_EQ(not_a_folder.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(not_a_folder.message()).find(file), std::string::npos);
}

TEST(FileUtilTest, WritersOfOnePathNeverShareATemporaryFile) {
  const std::string dir = TempDir("writers");
  const std::string path = dir + "/module.pt";
  // Something planted where a fixed temporary name would be: left untouched.
  const std::string victim = dir + "/victim";
  ASSERT_TRUE(WriteFileAtomically(victim, "keep me").ok());
  ASSERT_EQ(::link(victim.c_str(), (path + ".tmp").c_str()), 0);
  constexpr size_t kSize = 1 << 20;
  std::vector<std::thread> writers;
  std::vector<int> failures(4, 0);
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 20; ++i) {
        if (!WriteFileAtomically(path, std::string(kSize, static_cast<char>('a' + w))).ok()) {
          ++failures[static_cast<size_t>(w)];
        }
      }
    });
  }
  for (std::thread& t : writers) t.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
  StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  ASSERT_EQ(bytes->size(), kSize);
  EXPECT_EQ(bytes->find_first_not_of((*bytes)[0]), std::string::npos);
  EXPECT_EQ(*ReadFile(victim), "keep me");
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 3);  // module.pt, victim, and the planted link
}

TEST(FileUtilTest, AWriteToAMissingFolderNamesTheFile) {
  const std::string path = TempDir("missing") + "/no/such/folder/f";
  Status s = WriteFileAtomically(path, "x");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find(path + ".tmp"), std::string::npos) << s;
}

// A process killed at random moments while it rewrites a file over and over
// always leaves the old or the new file, whole.
TEST(FileUtilTest, AProcessKilledMidWriteLeavesTheOldOrTheNewFileNeverATornOne) {
  const std::string dir = TempDir("kill");
  const std::string path = dir + "/state.bin";
  constexpr size_t kSize = 3 << 20;  // large enough that a write takes a while
  ASSERT_TRUE(WriteFileAtomically(path, std::string(kSize, 'a')).ok());
  std::mt19937 rng(12345);
  int kills = 0;
  for (int attempt = 0; attempt < 30; ++attempt) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Alternates two versions of the file until it is killed.
      for (int i = 0;; ++i) {
        const char fill = static_cast<char>('b' + i % 2);
        if (!WriteFileAtomically(path, std::string(kSize, fill)).ok()) ::_exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(
        std::uniform_int_distribution<int>(2000, 40000)(rng)));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    // Killed, not failed on its own.
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer stopped with status " << status;
    ++kills;
    StatusOr<std::string> bytes = ReadFile(path);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    ASSERT_EQ(bytes->size(), kSize) << "after kill " << kills;
    const char first = (*bytes)[0];
    ASSERT_TRUE(first == 'a' || first == 'b' || first == 'c');
    ASSERT_EQ(bytes->find_first_not_of(first), std::string::npos) << "torn after kill " << kills;
    EXPECT_EQ(ModeOf(path), 0600u);
  }
  EXPECT_EQ(kills, 30);
}

}  // namespace
}  // namespace fedsilo
