#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "tracking/jsonl_metrics_sink.h"
#include "tracking/run_directory.h"

namespace fedsilo::tracking {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(JsonlMetricsSinkTest, WritesOneParsableObjectPerLineFromManyThreads) {
  const std::string path = FreshDir("jsonl") + "/metrics.jsonl";
  {
    auto sink = JsonlMetricsSink::Open(path);
    ASSERT_TRUE(sink.ok()) << sink.status();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int r = 1; r <= 50; ++r) {
          const std::string silo = "silo-" + std::to_string(t);
          ASSERT_TRUE((*sink)->Record({r, silo, silo + "/train_loss", 0.5 * r, 1.0}).ok());
        }
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_TRUE((*sink)->Record({1, "global", "global/test_loss", NAN, 2.0}).ok());
  }
  std::ifstream in(path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);  // throws on a torn line
    EXPECT_TRUE(j.contains("round") && j.contains("source") && j.contains("name") &&
                j.contains("value") && j.contains("time"));
    if (j["source"] == "global") {
      EXPECT_TRUE(j["value"].is_null());
    }
    ++lines;
  }
  EXPECT_EQ(lines, 201);
}

// A stand-in for the real AEAD sealer (secure/storage_keys.h, exercised by
// CliTest.EncryptionAtRestSealsModelsAndLedgersAndCatchesTampering): enough
// to see that records go through the installed sealer and come back.
class ReversingSealer : public FileSealer {
 public:
  std::string Seal(absl::string_view plaintext, absl::string_view name) const override {
    return absl::StrCat(kSealedMagic, name, "|", std::string(plaintext.rbegin(), plaintext.rend()));
  }
  StatusOr<std::string> Open(absl::string_view sealed, absl::string_view name,
                             absl::string_view source) const override {
    sealed.remove_prefix(kSealedMagic.size());
    if (!absl::ConsumePrefix(&sealed, absl::StrCat(name, "|"))) {
      return absl::DataLossError(absl::StrCat(source, ": sealed under another name"));
    }
    return std::string(sealed.rbegin(), sealed.rend());
  }
};

TEST(JsonlMetricsSinkTest, SealsEachRecordBoundToItsLineWhenASealerIsInstalled) {
  const std::string path = std::filesystem::temp_directory_path() / "fedsilo-sealed-metrics.jsonl";
  std::filesystem::remove(path);
  SetFileSealer(std::make_shared<ReversingSealer>());
  for (int opened = 0; opened < 2; ++opened) {  // a second sink goes on numbering
    auto sink = JsonlMetricsSink::Open(path);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Record({2 + opened, "silo-1", "silo-1/train_loss", 0.25, 1.0}).ok());
  }
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::ifstream in(path);
  std::string first, second;
  ASSERT_TRUE(std::getline(in, first) && std::getline(in, second));
  EXPECT_EQ(first.find("train_loss"), std::string::npos);
  StatusOr<std::string> opened = OpenMetricsLine(second, path, 2);
  ASSERT_TRUE(opened.ok()) << opened.status();
  nlohmann::json j = nlohmann::json::parse(*opened);
  EXPECT_EQ(j["name"], "silo-1/train_loss");
  EXPECT_EQ(j["round"], 3);
  // A line moved to another place does not open.
  EXPECT_FALSE(OpenMetricsLine(first, path, 2).ok());
  // Nor does a plain line while a sealer is installed.
  EXPECT_FALSE(OpenMetricsLine("{\"round\":1}", path, 1).ok());
  SetFileSealer(nullptr);
  // Without the sealer a sealed line is refused, naming the file.
  StatusOr<std::string> refused = OpenMetricsLine(first, path, 1);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr(path));
  EXPECT_EQ(*OpenMetricsLine("{\"round\":1}", path, 1), "{\"round\":1}");  // plain lines pass
}

TEST(JsonlMetricsSinkTest, UnwritableFolderIsAnErrorNamingThePath) {
  auto sink = JsonlMetricsSink::Open("/nonexistent-dir/metrics.jsonl");
  ASSERT_FALSE(sink.ok());
  EXPECT_NE(sink.status().message().find("/nonexistent-dir/metrics.jsonl"), std::string::npos);
}

TEST(RunDirectoryTest, CreatesUniqueSafeFolders) {
  const std::string workdir = FreshDir("runs");
  const auto now = std::chrono::system_clock::from_time_t(1795000000);
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    StatusOr<RunDirectory> run = RunDirectory::Create(workdir, "my job/1", now);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_TRUE(std::regex_match(run->run_id(), std::regex(R"(my-job-1-\d{8}-\d{6}-[0-9a-f]{4})")))
        << run->run_id();
    EXPECT_TRUE(std::filesystem::is_directory(run->path() + "/checkpoints"));
    EXPECT_EQ(run->CheckpointPath(7), run->path() + "/checkpoints/round-0007.fsm");
    ids.insert(run->run_id());
  }
  EXPECT_EQ(ids.size(), 5u);
}

}  // namespace
}  // namespace fedsilo::tracking
