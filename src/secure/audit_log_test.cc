#include "secure/audit_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"

namespace fedsilo::secure {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string FreshLog(const std::string& name) {
  const std::string dir = (fs::temp_directory_path() / ("fedsilo-audit-" + name)).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir + "/audit.log";
}

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> lines = absl::StrSplit(*ReadFile(path), '\n', absl::SkipEmpty());
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream(path, std::ios::trunc) << absl::StrJoin(lines, "\n") << "\n";
}

void WriteEntries(const std::string& path, int n) {
  auto log = AuditLog::Open(path, "orchestrator 'o'");
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 1; i <= n; ++i) {
    ASSERT_TRUE((*log)
                    ->Append("model_sent", {{"silo", "silo-" + std::to_string(i)},
                                            {"round", "1"},
                                            {"model", std::string(64, 'a')}})
                    .ok());
  }
}

TEST(AuditLogTest, AnIntactChainVerifiesAndContinuesAcrossReopens) {
  const std::string path = FreshLog("intact");
  WriteEntries(path, 4);
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, 4);
  WriteEntries(path, 2);
  StatusOr<AuditVerification> again = VerifyAuditLog(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->entries, 6);
  EXPECT_NE(again->head, v->head);
  EXPECT_THAT(Lines(path)[4], HasSubstr("\"prev\":\"" + v->head + "\""));
}

TEST(AuditLogTest, AnEditedEntryIsTheFirstBreakReported) {
  const std::string path = FreshLog("edited");
  WriteEntries(path, 5);
  std::vector<std::string> lines = Lines(path);
  lines[2] = absl::StrReplaceAll(lines[2], {{"silo-3", "silo-9"}});
  WriteLines(path, lines);
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(v.status().message()),
              HasSubstr(path + ":3: entry 3 was altered: its hash does not match its contents; "
                               "the 2 entries before it are intact"));
}

TEST(AuditLogTest, ARemovedOrReorderedEntryBreaksTheChain) {
  const std::string path = FreshLog("removed");
  WriteEntries(path, 5);
  std::vector<std::string> lines = Lines(path);
  lines.erase(lines.begin() + 1);
  WriteLines(path, lines);
  EXPECT_THAT(std::string(VerifyAuditLog(path).status().message()),
              HasSubstr(":2: entry 2 does not follow the entry before it"));
  lines = Lines(path);
  std::swap(lines[0], lines[1]);
  WriteLines(path, lines);
  EXPECT_THAT(std::string(VerifyAuditLog(path).status().message()), HasSubstr(":1: entry 1"));
}

TEST(AuditLogTest, ATornLastEntryIsCutAndTheCutRecorded) {
  const std::string path = FreshLog("torn");
  WriteEntries(path, 3);
  const std::string text = *ReadFile(path);
  std::ofstream(path, std::ios::trunc) << text.substr(0, text.size() - 20);  // a crash mid-write
  EXPECT_THAT(std::string(VerifyAuditLog(path).status().message()), HasSubstr("torn"));
  WriteEntries(path, 1);
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, 4);  // 2 intact + the repair note + 1
  EXPECT_THAT(Lines(path)[2], HasSubstr("audit_log_repaired"));
}

TEST(AuditLogTest, ModelDigestsDependOnEveryValueAndName) {
  ModelState a;
  ASSERT_TRUE(a.Add(Tensor::FromFloats("w", {2}, {1, 2})).ok());
  ModelState b = a;
  EXPECT_EQ(ModelDigest(a), ModelDigest(b));
  EXPECT_EQ(ModelDigest(a).size(), 64u);
  b.mutable_tensors()[0].floats()[1] = 2.0001f;
  EXPECT_NE(ModelDigest(a), ModelDigest(b));
  ModelState c;
  ASSERT_TRUE(c.Add(Tensor::FromFloats("v", {2}, {1, 2})).ok());
  EXPECT_NE(ModelDigest(a), ModelDigest(c));
  EXPECT_EQ(BytesDigest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace fedsilo::secure
