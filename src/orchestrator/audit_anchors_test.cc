#include "orchestrator/audit_anchors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_split.h"
#include "core/file_util.h"

namespace fedsilo::orchestrator {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

secure::SignedAuditHead Head(const std::string& silo, int64_t seq, char hash = 'a') {
  secure::SignedAuditHead h;
  h.federation = "fed";
  h.participant = silo;
  h.head = {seq, std::string(64, hash)};
  h.unix_millis = 1;
  h.certificate_pem = "pem";
  h.signature = "sig";
  return h;
}

struct Book {
  explicit Book(const std::string& name) {
    dir = ::testing::TempDir() + "/anchors_" + name;
    fs::remove_all(dir);
    log = std::move(secure::AuditLog::Open(dir + "-audit.log", "orchestrator 'o'")).value();
    anchors = std::move(AuditAnchors::Open(dir, log.get(), [this] { return now; })).value();
  }
  ~Book() { fs::remove(dir + "-audit.log"); }
  std::vector<int64_t> Kept(const std::string& silo) {
    std::vector<int64_t> seqs;
    StatusOr<std::string> text = ReadFile(anchors->PathOf(silo));
    if (!text.ok()) return seqs;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      seqs.push_back(secure::ParseAuditHeadLine(line, "x")->head.seq);
    }
    return seqs;
  }
  std::string dir;
  std::chrono::system_clock::time_point now{std::chrono::hours(1)};
  std::unique_ptr<secure::AuditLog> log;
  std::unique_ptr<AuditAnchors> anchors;
};

TEST(AuditAnchorsTest, KeepsEachNewHeadOncePerSiloPrivately) {
  Book book("keep");
  book.anchors->Record(Head("a", 3));
  book.anchors->Record(Head("a", 3));  // the same again: nothing new
  book.anchors->Record(Head("b", 1));
  book.anchors->Record(Head("a", 7));
  EXPECT_EQ(book.Kept("a"), (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(book.Kept("b"), (std::vector<int64_t>{1}));
  EXPECT_EQ(fs::status(book.dir).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(book.log->entries(), 3);
  // A name that is not a participant's spelling never reaches the path.
  EXPECT_EQ(book.anchors->PathOf("../x"), book.dir + "/x-2e2e2f78.jsonl");
}

TEST(AuditAnchorsTest, AHeadBehindOrRewrittenIsKeptAndReported) {
  Book book("regress");
  book.anchors->Record(Head("a", 9));
  book.anchors->Record(Head("a", 2));       // went back
  book.anchors->Record(Head("a", 2, 'c'));  // the same entry, another hash
  EXPECT_EQ(book.Kept("a"), (std::vector<int64_t>{9, 2, 2}));
  const std::string audit = *ReadFile(book.dir + "-audit.log");
  EXPECT_THAT(audit, HasSubstr("silo_audit_head_regressed"));
  EXPECT_THAT(audit, HasSubstr("\"previous_entries\":\"9\""));
}

TEST(AuditAnchorsTest, ASiloSendingHeadsWithoutEndIsHeldToABurst) {
  Book book("burst");
  for (int i = 1; i <= 1000; ++i) book.anchors->Record(Head("a", i));
  const size_t burst = book.Kept("a").size();
  EXPECT_LE(burst, 21u);
  EXPECT_GE(burst, 20u);
  // Time earns it more, one per ten seconds.
  book.now += std::chrono::seconds(30);
  for (int i = 1001; i <= 1100; ++i) book.anchors->Record(Head("a", i));
  EXPECT_EQ(book.Kept("a").size(), burst + 3);
  // Reopened (an orchestrator restart), the last kept head is known.
  book.anchors =
      std::move(AuditAnchors::Open(book.dir, book.log.get(), [&] { return book.now; })).value();
  book.anchors->Record(Head("a", 5));
  EXPECT_THAT(*ReadFile(book.dir + "-audit.log"), HasSubstr("silo_audit_head_regressed"));
}

// Regressions are reported, but a silo alternating two heads (or counting
// down) is held to the same burst as one counting up.
TEST(AuditAnchorsTest, ASiloAlternatingHeadsIsHeldToTheBurstToo) {
  Book book("alternate");
  for (int i = 0; i < 1000; ++i) book.anchors->Record(Head("a", 5, i % 2 == 0 ? 'a' : 'b'));
  EXPECT_LE(book.Kept("a").size(), 21u);
  for (int i = 1000; i > 0; --i) book.anchors->Record(Head("b", i));
  EXPECT_LE(book.Kept("b").size(), 21u);
  EXPECT_LE(book.log->entries(), 42);
}

}  // namespace
}  // namespace fedsilo::orchestrator
