#include "secure/storage_keys.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "core/model_state_file.h"

namespace fedsilo::secure {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const std::string dir = (fs::temp_directory_path() / ("fedsilo-keys-" + name)).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Installs a sealer for one test and removes it after.
struct ScopedSealer {
  explicit ScopedSealer(const KeyRing& ring) {
    SetFileSealer(std::make_shared<AeadFileSealer>(ring));
  }
  ~ScopedSealer() { SetFileSealer(nullptr); }
};

// A file as an earlier fedsilo sealed it: format 1, no name bound.
std::string SealFormat1(const KeyRing& ring, absl::string_view plaintext) {
  std::string header = "FSEAL";
  header.push_back(1);
  header.push_back(static_cast<char>(ring.current.size()));
  header += ring.current;
  std::string nonce(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, '\0');
  randombytes_buf(nonce.data(), nonce.size());
  header += nonce;
  std::string out = header;
  out.resize(header.size() + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(out.data() + header.size()), &written,
      reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const unsigned char*>(header.data()), header.size(), nullptr,
      reinterpret_cast<const unsigned char*>(nonce.data()), ring.keys.at(ring.current).data());
  out.resize(header.size() + written);
  return out;
}

TEST(StorageKeysTest, SealedBytesOpenOnlyUnchangedWithTheirKeyAndUnderTheirName) {
  const KeyRing ring = NewKeyRing();
  const AeadFileSealer sealer(ring);
  const std::string name = "runs/x/final_model.fsm";
  const std::string sealed = sealer.Seal("weights and ledgers", name);
  EXPECT_TRUE(IsSealed(sealed));
  EXPECT_THAT(sealed, HasSubstr(ring.current));  // the key id is in the header
  EXPECT_THAT(sealed, Not(HasSubstr("weights")));
  EXPECT_EQ(*sealer.Open(sealed, name, "f.fsm"), "weights and ledgers");

  for (size_t at : {size_t{8}, sealed.size() / 2, sealed.size() - 1}) {
    std::string flipped = sealed;
    flipped[at] ^= 0x01;
    StatusOr<std::string> opened = sealer.Open(flipped, name, "runs/x/final_model.fsm");
    ASSERT_FALSE(opened.ok()) << "flip at " << at;
    EXPECT_THAT(std::string(opened.status().message()), HasSubstr("runs/x/final_model.fsm"));
  }
  StatusOr<std::string> truncated = sealer.Open(sealed.substr(0, sealed.size() - 5), name, "f.fsm");
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);
  // Under another name (the file put in another's place): refused.
  StatusOr<std::string> moved = sealer.Open(sealed, "runs/y/final_model.fsm", "y");
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(moved.status().message()), HasSubstr("another file put in the place"));

  // Another ring: the key id is unknown.
  StatusOr<std::string> other = AeadFileSealer(NewKeyRing()).Open(sealed, name, "f.fsm");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(other.status().message()), HasSubstr(ring.current));
  // The same id with a different key: authentication fails.
  KeyRing impostor = ring;
  impostor.keys[ring.current] = RandomKey32();
  EXPECT_EQ(AeadFileSealer(impostor).Open(sealed, name, "f.fsm").status().code(),
            absl::StatusCode::kDataLoss);

  // Format 1 bound no name: refused, naming the command that re-seals it;
  // it still opens to be re-sealed.
  const std::string old = SealFormat1(ring, "old weights");
  StatusOr<std::string> refused = sealer.Open(old, name, "old.fsm");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("fedsilo keys rotate"));
  EXPECT_EQ(*sealer.OpenAnyVersion(old, "anything", "old.fsm"), "old weights");
}

TEST(StorageKeysTest, AFolderAllOfAnOlderFormatOrAllPlainIsSealedWithoutForce) {
  const std::string dir = FreshDir("upgrade");
  KeyRing ring = NewKeyRing();
  ASSERT_TRUE(WriteFileAtomically(dir + "/privacy-ledger.json", SealFormat1(ring, "{}")).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/summary.json", SealFormat1(ring, "{}")).ok());
  StatusOr<ReencryptStats> stats = ReencryptTree(dir, ring, /*seal_plain=*/false);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->reencrypted, 2);
  const std::string plain = FreshDir("plain");
  ASSERT_TRUE(WriteFileAtomically(plain + "/privacy-ledger.json", "{}").ok());
  stats = ReencryptTree(plain, ring, /*seal_plain=*/true);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->newly_sealed, std::vector<std::string>{plain + "/privacy-ledger.json"});
}

TEST(StorageKeysTest, SealedNamesFollowTheRunAndNotTheFolderItWasMovedTo) {
  EXPECT_EQ(SealedName("/srv/state/runs/r1/checkpoints/round-0007.fsm"),
            "runs/r1/checkpoints/round-0007.fsm");
  EXPECT_EQ(SealedName("moved/elsewhere/runs/r1/checkpoints/round-0007.fsm"),
            "runs/r1/checkpoints/round-0007.fsm");
  EXPECT_EQ(SealedName("kits/hospital-a/state/privacy-ledger.json"), "privacy-ledger.json");
  EXPECT_EQ(SealedName("state/models/ab12.pt"), "models/ab12.pt");
  EXPECT_EQ(SealedName("runs/r1/summary.json"), "runs/r1/summary.json");
  EXPECT_EQ(SealedLineName("w/runs/r1/metrics.jsonl", 3), "runs/r1/metrics.jsonl line 3");
  // A state folder that happens to sit in a folder called "runs" is not a run.
  EXPECT_EQ(SealedName("/srv/runs/hospital-a/privacy-ledger.json"), "privacy-ledger.json");
  // Relative paths name the same file as absolute ones.
  EXPECT_EQ(SealedName("x/../runs/r1/final_model.fsm"), "runs/r1/final_model.fsm");
  const std::string cwd = fs::current_path().string();
  EXPECT_EQ(SealedName("./final_model.fsm"), SealedName(cwd + "/final_model.fsm"));
  // Simulated silos share one ring: each one's files are bound to it.
  EXPECT_EQ(SealedName("w/silos/a/privacy-ledger.json"), "silos/a/privacy-ledger.json");
  EXPECT_NE(SealedName("w/silos/a/privacy-ledger.json"),
            SealedName("w/silos/b/privacy-ledger.json"));
  // A vertical run's parts and predictions are bound to the run (and, in
  // simulation, to the party): one run's cannot stand in for another's.
  EXPECT_EQ(SealedName("kits/bank/state/vertical/r1/bottom.fsm"), "vertical/r1/bottom.fsm");
  EXPECT_NE(SealedName("state/vertical/r1/predictions.csv"),
            SealedName("state/vertical/r2/predictions.csv"));
  EXPECT_EQ(SealedName("w/silos/a/vertical/r1/top.fsm"), "silos/a/vertical/r1/top.fsm");
  EXPECT_EQ(SealedName("w/runs/r1/parties/bank/statistics.fsm"),
            "runs/r1/parties/bank/statistics.fsm");
  EXPECT_EQ(ProtectionOf("state/vertical/r1/predictions.csv"), Protection::kWhole);
  EXPECT_EQ(ProtectionOf("w/runs/r1/parties/bank/predictions.csv"), Protection::kWhole);
  EXPECT_EQ(ProtectionOf("work/predictions.csv"), Protection::kNone);  // a user's own file
}

TEST(StorageKeysTest, KeyRingsRoundTripAndMustBePrivate) {
  const std::string dir = FreshDir("ring");
  KeyRing ring = NewKeyRing();
  const std::string first = ring.current;
  const std::string second = AddKey(ring);
  EXPECT_NE(first, second);
  ASSERT_TRUE(SaveKeyRing(ring, dir + "/keys.yaml").ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/keys.yaml").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  StatusOr<KeyRing> loaded = LoadKeyRing(dir + "/keys.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->current, second);
  EXPECT_EQ(loaded->keys, ring.keys);

  ::chmod((dir + "/keys.yaml").c_str(), 0644);
  EXPECT_EQ(LoadKeyRing(dir + "/keys.yaml").status().code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(WriteFileAtomically(dir + "/bad.yaml", "current: a\nkeys: {a: notbase64}\n").ok());
  ::chmod((dir + "/bad.yaml").c_str(), 0600);
  StatusOr<KeyRing> bad = LoadKeyRing(dir + "/bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.yaml: keys.a"));
  EXPECT_EQ(LoadKeyRing(dir + "/missing.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST(StorageKeysTest, ConfiguredFromTheEnvironment) {
  ::unsetenv(kStorageKeysEnv);
  ::unsetenv(kStorageKeyEnv);
  StatusOr<std::optional<KeyRing>> none = ConfiguredKeyRing("");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ::setenv(kStorageKeyEnv, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 1);
  StatusOr<std::optional<KeyRing>> env = ConfiguredKeyRing("");
  ASSERT_TRUE(env.ok() && env->has_value()) << env.status();
  EXPECT_THAT((*env)->current, HasSubstr("env-"));
  EXPECT_EQ((*env)->keys.at((*env)->current)[31], 31);
  ::setenv(kStorageKeyEnv, "short", 1);
  EXPECT_THAT(std::string(ConfiguredKeyRing("").status().message()),
              HasSubstr("FEDSILO_STORAGE_KEY: not the base64 of a 32-byte key"));
  ::unsetenv(kStorageKeyEnv);
}

TEST(StorageKeysTest, ModelFilesAreSealedWhileASealerIsInstalled) {
  const std::string dir = FreshDir("model");
  fs::create_directories(dir + "/runs/r/checkpoints");
  const std::string round1 = dir + "/runs/r/checkpoints/round-0001.fsm";
  const std::string round2 = dir + "/runs/r/checkpoints/round-0002.fsm";
  ModelState m;
  ASSERT_TRUE(m.Add(Tensor::FromFloats("w", {3}, {1.5f, -2.f, 3.f})).ok());
  const KeyRing ring = NewKeyRing();
  {
    ScopedSealer sealer(ring);
    ASSERT_TRUE(WriteModelStateFile(round1, m, {{"round", "1"}}).ok());
    ASSERT_TRUE(WriteModelStateFile(round2, m, {{"round", "2"}}).ok());
    StatusOr<ModelFile> back = ReadModelStateFile(round1);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->state.tensors()[0].floats()[1], -2.f);
    // Round 1's checkpoint copied over round 2's does not open as round 2.
    fs::copy_file(round1, round2, fs::copy_options::overwrite_existing);
    StatusOr<ModelFile> swapped = ReadModelStateFile(round2);
    EXPECT_EQ(swapped.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(swapped.status().message()), HasSubstr(round2));
  }
  EXPECT_TRUE(IsSealed(*ReadFile(round1)));
  StatusOr<ModelFile> without = ReadModelStateFile(round1);
  EXPECT_EQ(without.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(without.status().message()),
              HasSubstr(round1 + ": the file is encrypted"));
  // A plain file where a sealed one belongs is refused, by name.
  const std::string plain = dir + "/runs/r/final_model.fsm";
  ASSERT_TRUE(WriteModelStateFile(plain, m).ok());
  ScopedSealer sealer(ring);
  StatusOr<ModelFile> refused = ReadModelStateFile(plain);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(plain + ": is not encrypted, but a storage key ring is configured"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("fedsilo keys seal-existing"));
}

TEST(StorageKeysTest, RotationReencryptsEveryFileUnderTheNewKeyAndFormat) {
  const std::string dir = FreshDir("rotate");
  fs::create_directories(dir + "/runs/a");
  KeyRing ring = NewKeyRing();
  const std::string old_id = ring.current;
  const AeadFileSealer old_sealer(ring);
  const std::string final_model = dir + "/runs/a/final_model.fsm";
  ASSERT_TRUE(
      WriteFileAtomically(final_model, old_sealer.Seal("model", "runs/a/final_model.fsm")).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/privacy-ledger.json", SealFormat1(ring, "{}")).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/runs/a/checkpoint-1.fsm", "plain model").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/runs/a/job.yaml", "name: a").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/runs/a/endpoint", "127.0.0.1:1").ok());
  // Metrics: one sealed line, one plain line.
  {
    ScopedSealer sealer(ring);
    ASSERT_TRUE(WriteFileAtomically(
                    dir + "/runs/a/metrics.jsonl",
                    SealLine("{\"round\":1}", SealedLineName(dir + "/runs/a/metrics.jsonl", 1)) +
                        "\n{\"round\":2}\n")
                    .ok());
  }

  const std::string new_id = AddKey(ring);
  // A format-1 ledger among current files: it may have been put there to be
  // re-sealed as genuine. Refused, naming it, with nothing changed.
  const std::string before = *ReadFile(final_model);
  StatusOr<ReencryptStats> stats = ReencryptTree(dir, ring, /*seal_plain=*/false);
  ASSERT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(dir + "/privacy-ledger.json"));
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("--force"));
  EXPECT_EQ(*ReadFile(final_model), before);
  stats = ReencryptTree(dir, ring, /*seal_plain=*/false, /*force=*/true);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->reencrypted, 3);  // final model, format-1 ledger, metrics' sealed line
  EXPECT_EQ(stats->plain, 2);        // checkpoint-1.fsm, job.yaml
  KeyRing only_new;
  only_new.current = new_id;
  only_new.keys[new_id] = ring.keys[new_id];
  for (const std::string f : {"/runs/a/final_model.fsm", "/privacy-ledger.json"}) {
    const std::string bytes = *ReadFile(dir + f);
    EXPECT_EQ(*AeadFileSealer::KeyIdOf(bytes, f), new_id);
    EXPECT_TRUE(AeadFileSealer(only_new).Open(bytes, SealedName(dir + f), f).ok()) << f;
  }
  EXPECT_EQ(*ReadFile(dir + "/runs/a/checkpoint-1.fsm"), "plain model");
  // Again, sealing the plain files too: plain files among sealed ones are
  // refused the same way, then sealed with --force and listed.
  stats = ReencryptTree(dir, ring, /*seal_plain=*/true);
  ASSERT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(dir + "/runs/a/job.yaml"));
  stats = ReencryptTree(dir, ring, /*seal_plain=*/true, /*force=*/true);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->current, 2);
  EXPECT_EQ(stats->reencrypted, 3);  // checkpoint, job.yaml, metrics' plain line
  EXPECT_EQ(stats->newly_sealed.size(), 3u);
  EXPECT_TRUE(IsSealed(*ReadFile(dir + "/runs/a/checkpoint-1.fsm")));
  EXPECT_TRUE(IsSealed(*ReadFile(dir + "/runs/a/job.yaml")));
  EXPECT_EQ(*ReadFile(dir + "/runs/a/endpoint"), "127.0.0.1:1");  // not derived from data
  ScopedSealer sealer(only_new);
  const std::string metrics = *ReadFile(dir + "/runs/a/metrics.jsonl");
  EXPECT_THAT(metrics, Not(HasSubstr("round")));
  const std::vector<std::string> lines = absl::StrSplit(metrics, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    StatusOr<std::string> line =
        OpenLine(lines[i], SealedLineName(dir + "/runs/a/metrics.jsonl", i + 1), "metrics.jsonl");
    ASSERT_TRUE(line.ok()) << line.status();
    EXPECT_EQ(*line, absl::StrCat("{\"round\":", i + 1, "}"));
  }
  EXPECT_NE(old_id, new_id);
}

}  // namespace
}  // namespace fedsilo::secure
