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
#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "secure/certificate_authority.h"
#include "secure/storage_keys.h"

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

void WriteEntries(const std::string& path, int n, const std::string& actor = "orchestrator 'o'") {
  auto log = AuditLog::Open(path, actor);
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

// What someone who can write the file but has no key ring would do: rewrite
// the log as a consistent chain of its own (here: plain entries).
// A valid chain of n entries, each unlike the genuine ones (whatever the
// clock says), in place of the log.
void ForgeConsistentChain(const std::string& path, int n) {
  SetFileSealer(nullptr);
  fs::remove(path);
  WriteEntries(path, n, "orchestrator 'forger'");
}

struct ScopedRing {
  explicit ScopedRing(const KeyRing& ring) { SetFileSealer(std::make_shared<AeadFileSealer>(ring)); }
  ~ScopedRing() { SetFileSealer(nullptr); }
};

TEST(AuditLogTest, WithAKeyRingEntriesAreSealedAndTheChainCannotBeForgedWithoutIt) {
  const std::string path = FreshLog("keyed");
  const KeyRing ring = NewKeyRing();
  {
    ScopedRing keyed(ring);
    WriteEntries(path, 5);
    WriteEntries(path, 1);  // reopened: the chain goes on under the key
    StatusOr<AuditVerification> v = VerifyAuditLog(path);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->entries, 6);
    EXPECT_TRUE(v->keyed);
  }
  EXPECT_THAT(*ReadFile(path), ::testing::Not(HasSubstr("silo-3")));  // private
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // Without the ring: it cannot be read, let alone checked.
  EXPECT_THAT(std::string(VerifyAuditLog(path).status().message()),
              HasSubstr("the file is encrypted"));

  const std::vector<std::string> original = Lines(path);
  ScopedRing keyed(ring);
  // Two entries swapped, or one removed: the lines no longer authenticate.
  std::vector<std::string> lines = original;
  std::swap(lines[1], lines[2]);
  WriteLines(path, lines);
  StatusOr<AuditVerification> swapped = VerifyAuditLog(path);
  EXPECT_EQ(swapped.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(swapped.status().message()),
              HasSubstr(":2: entry 2 fails authentication under the storage key"));
  lines = original;
  lines.erase(lines.begin() + 3);
  WriteLines(path, lines);
  EXPECT_THAT(std::string(VerifyAuditLog(path).status().message()),
              HasSubstr(":4: entry 4 fails authentication"));
  // The whole log rewritten as a consistent chain without the key: refused.
  ForgeConsistentChain(path, 6);
  SetFileSealer(std::make_shared<AeadFileSealer>(ring));
  StatusOr<AuditVerification> forged = VerifyAuditLog(path);
  EXPECT_FALSE(forged.ok());
  EXPECT_THAT(std::string(forged.status().message()), HasSubstr("is not encrypted"));
}

TEST(AuditLogTest, AnAnchorCatchesACutOffTailAndARewrittenChain) {
  const std::string path = FreshLog("anchor");
  WriteEntries(path, 6);
  StatusOr<AuditVerification> before = VerifyAuditLog(path);
  ASSERT_TRUE(before.ok());
  const std::string kept = absl::StrCat(before->entries, ":", before->head);
  StatusOr<AuditAnchor> anchor = ParseAuditAnchor(kept);
  ASSERT_TRUE(anchor.ok()) << anchor.status();
  StatusOr<AuditVerification> reaches = VerifyAuditLog(path, {*anchor});
  ASSERT_TRUE(reaches.ok()) << reaches.status();
  EXPECT_TRUE(reaches->anchored);
  WriteEntries(path, 2);  // a log that grew since still reaches its anchor
  EXPECT_TRUE(VerifyAuditLog(path, {*anchor}).ok());

  // The last three entries cut off: a valid, shorter chain...
  std::vector<std::string> lines = Lines(path);
  lines.resize(5);
  WriteLines(path, lines);
  ASSERT_TRUE(VerifyAuditLog(path).ok());
  // ...that the anchor exposes.
  StatusOr<AuditVerification> cut = VerifyAuditLog(path, {*anchor});
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(cut.status().message()),
              HasSubstr("ends at entry 5, but the anchor records entry 6"));
  // A chain rewritten consistently from the start: the anchored entry differs.
  ForgeConsistentChain(path, 7);
  StatusOr<AuditVerification> rewritten = VerifyAuditLog(path, {*anchor});
  EXPECT_THAT(std::string(rewritten.status().message()),
              HasSubstr("entry 6 has hash"));
  for (const char* bad : {"6", "x:abc", "0:" , "6:ABC"}) {
    EXPECT_EQ(ParseAuditAnchor(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// Several anchors over time: each must match, and the earliest one that does
// not is reported.
TEST(AuditLogTest, EveryAnchorMustMatchNotOnlyTheLast) {
  const std::string path = FreshLog("anchors");
  WriteEntries(path, 3);
  StatusOr<AuditVerification> first = VerifyAuditLog(path);
  ASSERT_TRUE(first.ok());
  WriteEntries(path, 3);
  StatusOr<AuditVerification> second = VerifyAuditLog(path);
  ASSERT_TRUE(second.ok());
  const std::vector<AuditAnchor> anchors = {{3, first->head}, {6, second->head}};
  ASSERT_TRUE(VerifyAuditLog(path, anchors).ok());
  ForgeConsistentChain(path, 6);  // rewritten, as long as before
  StatusOr<AuditVerification> v = VerifyAuditLog(path, anchors);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("entry 3 has hash"));
}

struct Participant {
  std::string name;
  std::unique_ptr<CertificateAuthority> ca;
  IssuedCertificate issued;
};

Participant Issue(const std::string& name, ParticipantKind kind) {
  Participant p;
  p.name = name;
  p.ca = std::move(CertificateAuthority::Create("fed", 30, std::chrono::system_clock::now()))
             .value();
  CertificateRequest request;
  request.name = name;
  request.kind = kind;
  p.issued = std::move(p.ca->Issue(request, std::chrono::system_clock::now())).value();
  return p;
}

SignedAuditHead HeadOf(const Participant& p, int64_t seq) {
  SignedAuditHead h;
  h.federation = "fed";
  h.participant = p.name;
  h.head = {seq, std::string(64, 'a')};
  h.unix_millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  h.certificate_pem = p.issued.certificate_pem;
  auto signer = MessageSigner::Create(p.issued.private_key_pem);
  EXPECT_TRUE(signer.ok());
  EXPECT_TRUE(SignAuditHead(h, **signer).ok());
  return h;
}

TEST(AuditLogTest, ASignedHeadVerifiesAndAnyChangeToItDoesNot) {
  const Participant silo = Issue("hospital-a", ParticipantKind::kSilo);
  auto checker = SignatureChecker::Create(silo.ca->certificate_pem());
  ASSERT_TRUE(checker.ok()) << checker.status();
  const SignedAuditHead head = HeadOf(silo, 42);
  ASSERT_TRUE(CheckAuditHead(head, **checker, ParticipantKind::kSilo).ok());

  // Kept as a line and read back, it still verifies.
  auto parsed = ParseAuditHeadLine(AuditHeadLine(head, 1), "anchors.jsonl:1");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->head.seq, 42);
  EXPECT_TRUE(CheckAuditHead(*parsed, **checker, ParticipantKind::kSilo).ok());

  // Whoever keeps it (the orchestrator) cannot move it: another entry,
  // another hash, another silo's name, another federation, another time.
  SignedAuditHead moved = head;
  moved.head.seq = 41;
  EXPECT_TRUE(absl::IsPermissionDenied(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  moved = head;
  moved.head.hash = std::string(64, 'b');
  EXPECT_TRUE(absl::IsPermissionDenied(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  moved = head;
  moved.participant = "hospital-b";
  EXPECT_TRUE(absl::IsPermissionDenied(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  moved = head;
  moved.federation = "other";
  EXPECT_TRUE(absl::IsPermissionDenied(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  moved = head;
  moved.unix_millis += 1;
  EXPECT_TRUE(absl::IsPermissionDenied(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  // Nor forge one with a certificate of another federation.
  const Participant stranger = Issue("hospital-a", ParticipantKind::kSilo);
  EXPECT_TRUE(absl::IsPermissionDenied(
      CheckAuditHead(HeadOf(stranger, 42), **checker, ParticipantKind::kSilo)));
  // Malformed heads are refused before any signature is looked at.
  moved = head;
  moved.head.hash = "not-a-hash";
  EXPECT_TRUE(absl::IsInvalidArgument(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  moved = head;
  moved.head.seq = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)));
  for (const char* bad : {"", "{}", "[1]", "{\"entries\": 1}"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseAuditHeadLine(bad, "x").status())) << bad;
  }
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
