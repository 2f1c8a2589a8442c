#include "secure/storage_keys.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

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

TEST(StorageKeysTest, SealedBytesOpenOnlyUnchangedAndWithTheirKey) {
  const KeyRing ring = NewKeyRing();
  const AeadFileSealer sealer(ring);
  const std::string sealed = sealer.Seal("weights and ledgers");
  EXPECT_TRUE(IsSealed(sealed));
  EXPECT_THAT(sealed, HasSubstr(ring.current));  // the key id is in the header
  EXPECT_THAT(sealed, Not(HasSubstr("weights")));
  EXPECT_EQ(*sealer.Open(sealed, "f.fsm"), "weights and ledgers");

  for (size_t at : {size_t{8}, sealed.size() / 2, sealed.size() - 1}) {
    std::string flipped = sealed;
    flipped[at] ^= 0x01;
    StatusOr<std::string> opened = sealer.Open(flipped, "runs/x/final_model.fsm");
    ASSERT_FALSE(opened.ok()) << "flip at " << at;
    EXPECT_THAT(std::string(opened.status().message()), HasSubstr("runs/x/final_model.fsm"));
  }
  StatusOr<std::string> truncated = sealer.Open(sealed.substr(0, sealed.size() - 5), "f.fsm");
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);

  // Another ring: the key id is unknown.
  StatusOr<std::string> other = AeadFileSealer(NewKeyRing()).Open(sealed, "f.fsm");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(other.status().message()), HasSubstr(ring.current));
  // The same id with a different key: authentication fails.
  KeyRing impostor = ring;
  impostor.keys[ring.current] = RandomKey32();
  EXPECT_EQ(AeadFileSealer(impostor).Open(sealed, "f.fsm").status().code(),
            absl::StatusCode::kDataLoss);
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
  ModelState m;
  ASSERT_TRUE(m.Add(Tensor::FromFloats("w", {3}, {1.5f, -2.f, 3.f})).ok());
  const KeyRing ring = NewKeyRing();
  {
    ScopedSealer sealer(ring);
    ASSERT_TRUE(WriteModelStateFile(dir + "/m.fsm", m, {{"round", "3"}}).ok());
    StatusOr<ModelFile> back = ReadModelStateFile(dir + "/m.fsm");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->state.tensors()[0].floats()[1], -2.f);
  }
  EXPECT_TRUE(IsSealed(*ReadFile(dir + "/m.fsm")));
  StatusOr<ModelFile> without = ReadModelStateFile(dir + "/m.fsm");
  EXPECT_EQ(without.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(without.status().message()),
              HasSubstr(dir + "/m.fsm: the file is encrypted"));
  // A plain file still reads with a sealer installed.
  ASSERT_TRUE(WriteModelStateFile(dir + "/plain.fsm", m).ok());
  ScopedSealer sealer(ring);
  EXPECT_TRUE(ReadModelStateFile(dir + "/plain.fsm").ok());
}

TEST(StorageKeysTest, RotationReencryptsEveryFileUnderTheNewKey) {
  const std::string dir = FreshDir("rotate");
  fs::create_directories(dir + "/runs/a");
  KeyRing ring = NewKeyRing();
  const std::string old_id = ring.current;
  const AeadFileSealer old_sealer(ring);
  ASSERT_TRUE(WriteFileAtomically(dir + "/runs/a/final_model.fsm", old_sealer.Seal("model")).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/privacy-ledger.json", old_sealer.Seal("{}")).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/runs/a/checkpoint-1.fsm", "plain model").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/runs/a/job.yaml", "name: a").ok());

  const std::string new_id = AddKey(ring);
  StatusOr<ReencryptStats> stats = ReencryptTree(dir, ring, /*seal_plain=*/false);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->reencrypted, 2);
  EXPECT_EQ(stats->plain, 1);
  for (const char* f : {"/runs/a/final_model.fsm", "/privacy-ledger.json"}) {
    const std::string bytes = *ReadFile(dir + f);
    EXPECT_EQ(*AeadFileSealer::KeyIdOf(bytes, f), new_id);
    KeyRing only_new;
    only_new.current = new_id;
    only_new.keys[new_id] = ring.keys[new_id];
    EXPECT_TRUE(AeadFileSealer(only_new).Open(bytes, f).ok()) << f;
  }
  EXPECT_EQ(*ReadFile(dir + "/runs/a/checkpoint-1.fsm"), "plain model");
  // Again, sealing the plain model too; the sealed ones are already current.
  stats = ReencryptTree(dir, ring, /*seal_plain=*/true);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->current, 2);
  EXPECT_EQ(stats->reencrypted, 1);
  EXPECT_TRUE(IsSealed(*ReadFile(dir + "/runs/a/checkpoint-1.fsm")));
  EXPECT_EQ(*ReadFile(dir + "/runs/a/job.yaml"), "name: a");
  EXPECT_NE(old_id, new_id);
}

}  // namespace
}  // namespace fedsilo::secure
