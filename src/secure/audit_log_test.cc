#include "secure/audit_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
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

// The documented recipe, computed here with OpenSSL alone: hash =
// SHA-256(prev + "\n" + the line without its "hash" member), in hex.
std::string DocumentedHash(const std::string& prev, const std::string& line_without_hash) {
  const std::string input = prev + "\n" + line_without_hash;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : digest) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

// The line as written, with its `,"hash":"<64 hex>"` cut out by text (not
// by re-serializing it), and the hash it held.
std::pair<std::string, std::string> CutHash(const std::string& line) {
  const std::string key = ",\"hash\":\"";
  const size_t at = line.find(key);
  if (at == std::string::npos || line.size() < at + key.size() + 65) return {line, ""};
  const std::string hash = line.substr(at + key.size(), 64);
  EXPECT_EQ(line[at + key.size() + 64], '"') << line;
  return {line.substr(0, at) + line.substr(at + key.size() + 65), hash};
}

TEST(AuditLogTest, TheHashIsTheDocumentedRecipeRecomputedWithOpenSsl) {
  const std::string path = FreshLog("recipe");
  {
    auto log = AuditLog::Open(path, "orchestrator 'o'");
    ASSERT_TRUE(log.ok()) << log.status();
    // Values that JSON escapes: the recipe is over the bytes of the line.
    ASSERT_TRUE((*log)->Append("job_submitted", {{"user", "al\"ice"}, {"job", "j\\1"}}).ok());
    ASSERT_TRUE((*log)->Append("model_sent", {{"silo", "a"}, {"round", "1"}}).ok());
    ASSERT_TRUE((*log)->Append("trained", {{"silo", "a"}, {"round", "1"}}).ok());
  }
  const std::vector<std::string> lines = Lines(path);
  ASSERT_EQ(lines.size(), 3u);
  std::string prev(64, '0');  // the first entry's prev: 64 zeros
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    const auto [without, hash] = CutHash(lines[i]);
    ASSERT_EQ(hash.size(), 64u);
    EXPECT_THAT(without, HasSubstr("\"prev\":\"" + prev + "\""));
    EXPECT_EQ(DocumentedHash(prev, without), hash);
    // Keys sorted, one object per line.
    const nlohmann::json j = nlohmann::json::parse(lines[i]);
    std::vector<size_t> positions;
    for (const auto& [key, value] : j.items()) {
      positions.push_back(lines[i].find("\"" + key + "\":"));
    }
    EXPECT_TRUE(std::is_sorted(positions.begin(), positions.end()));
    EXPECT_EQ(j["seq"], static_cast<int>(i) + 1);
    prev = hash;
  }
  // The log's own verification agrees, and reports the same head.
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->head, prev);
}

TEST(AuditLogTest, AppendsFromManyThreadsNeverInterleaveAndTheChainVerifies) {
  const std::string path = FreshLog("threads");
  constexpr int kThreads = 8;
  constexpr int kEach = 200;
  {
    auto log = AuditLog::Open(path, "orchestrator 'o'");
    ASSERT_TRUE(log.ok()) << log.status();
    // Entries of a few KB, so that a write split in parts would show.
    const std::string padding(4000, 'x');
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          EXPECT_TRUE((*log)
                          ->Append("model_sent", {{"thread", std::to_string(t)},
                                                  {"i", std::to_string(i)},
                                                  {"padding", padding}})
                          .ok());
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ((*log)->entries(), kThreads * kEach);
  }
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, kThreads * kEach);
  // Every append is there once.
  std::set<std::pair<std::string, std::string>> seen;
  for (const std::string& line : Lines(path)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    seen.emplace(j["data"]["thread"].get<std::string>(), j["data"]["i"].get<std::string>());
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kEach));
}

TEST(AuditLogTest, ASecondWriterOfOneLogIsRefusedWhileTheFirstHasItOpen) {
  // Two writers would each chain from their own head, so the log would no
  // longer verify: the second is refused, naming the file, and may open it
  // once the first has closed it.
  const std::string path = FreshLog("two-writers");
  {
    auto first = AuditLog::Open(path, "silo 'a'");
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE((*first)->Append("model_received", {{"round", "1"}}).ok());
    auto second = AuditLog::Open(path, "silo 'a'");
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(second.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("in use"));
    ASSERT_TRUE((*first)->Append("trained", {{"round", "1"}}).ok());
  }
  WriteEntries(path, 2);
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->entries, 4);
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

TEST(AuditLogTest, SealExistingSealsAPlainLogAndRotationResealsItLineByLine) {
  const std::string path = FreshLog("reseal");
  const std::string dir = fs::path(path).parent_path().string();
  WriteEntries(path, 4);  // started without a ring
  StatusOr<AuditVerification> plain = VerifyAuditLog(path);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_FALSE(plain->keyed);

  // keys seal-existing: every line sealed, the chain itself unchanged.
  KeyRing ring = NewKeyRing();
  StatusOr<ReencryptStats> sealed = ReencryptTree(dir, ring, /*seal_plain=*/true);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->newly_sealed, std::vector<std::string>{path});
  for (const std::string& line : Lines(path)) EXPECT_THAT(line, HasSubstr("{\"sealed\":"));
  EXPECT_THAT(*ReadFile(path), ::testing::Not(HasSubstr("silo-3")));
  {
    ScopedRing keyed(ring);
    StatusOr<AuditVerification> v = VerifyAuditLog(path);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_TRUE(v->keyed);
    EXPECT_EQ(v->entries, 4);
    EXPECT_EQ(v->head, plain->head);
    WriteEntries(path, 1);  // and the log goes on, sealed
  }

  // keys rotate: each line re-sealed under the new key, bound to its line.
  const std::string old_id = ring.current;
  KeyRing old_only = ring;
  const std::string new_id = AddKey(ring);
  StatusOr<ReencryptStats> rotated = ReencryptTree(dir, ring, /*seal_plain=*/false);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->reencrypted, 1);
  KeyRing new_only;
  new_only.current = new_id;
  new_only.keys[new_id] = ring.keys[new_id];
  {
    ScopedRing keyed(new_only);
    StatusOr<AuditVerification> v = VerifyAuditLog(path);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_TRUE(v->keyed);
    EXPECT_EQ(v->entries, 5);
  }
  ScopedRing keyed(old_only);
  StatusOr<AuditVerification> with_old = VerifyAuditLog(path);
  ASSERT_FALSE(with_old.ok());
  EXPECT_THAT(std::string(with_old.status().message()), HasSubstr(new_id));
  EXPECT_NE(old_id, new_id);
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
  // A time past what the clock holds (its nanoseconds would overflow), as
  // the fuzzer found (fuzz/regressions/audit_head/time-after-2262).
  for (int64_t millis : {int64_t{17964000000000}, std::numeric_limits<int64_t>::max()}) {
    moved = head;
    moved.unix_millis = millis;
    EXPECT_TRUE(absl::IsInvalidArgument(CheckAuditHead(moved, **checker, ParticipantKind::kSilo)))
        << millis;
  }
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
