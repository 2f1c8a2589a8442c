// Reference files of this version's formats, committed under
// tests/fixtures/v1/ and read back value for value: a model state (.fsm), a
// run's checkpoint and server-optimizer state, and a final model sealed with
// a test key ring. A writer and a reader that changed together (a symmetric
// bug) still fail here, and later versions must keep reading these files.
//
// The fixtures were written once by this test with
//   FEDSILO_WRITE_FIXTURES=1 build/format_fixtures_test
// Never rewrite them to make a test pass: a new format version gets new
// fixtures (tests/fixtures/v2/) beside these.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "secure/storage_keys.h"

namespace fedsilo {
namespace {

namespace fs = std::filesystem;

std::string Fixtures() { return std::string(FEDSILO_SOURCE_DIR) + "/tests/fixtures/v1"; }

bool Writing() { return std::getenv("FEDSILO_WRITE_FIXTURES") != nullptr; }

// The model every fixture holds: each dtype, a scalar-like and a matrix,
// values that need every bit (a third, a subnormal, negative zero, a large
// int64).
ModelState Model() {
  ModelState m;
  EXPECT_TRUE(
      m.Add(Tensor::FromFloats("fc.weight", {2, 3}, {0.5f, -1.25f, 3.0f, 1e-3f, -0.0f, 7.0f}))
          .ok());
  Tensor bias("fc.bias", DType::kFloat64, {3});
  const double b[] = {1.0 / 3.0, -2.5, std::numeric_limits<double>::denorm_min()};
  std::memcpy(bias.data(), b, sizeof b);
  EXPECT_TRUE(m.Add(std::move(bias)).ok());
  Tensor steps("steps", DType::kInt64, {1});
  const int64_t s = 123456789012;
  std::memcpy(steps.data(), &s, sizeof s);
  EXPECT_TRUE(m.Add(std::move(steps)).ok());
  return m;
}

// The tensors of `got` are `want`'s, bit for bit.
void ExpectSame(const ModelState& got, const ModelState& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const Tensor& g = got.tensors()[i];
    const Tensor& w = want.tensors()[i];
    EXPECT_EQ(g.name(), w.name());
    EXPECT_EQ(g.dtype(), w.dtype()) << w.name();
    EXPECT_EQ(g.shape(), w.shape()) << w.name();
    ASSERT_EQ(g.num_bytes(), w.num_bytes()) << w.name();
    EXPECT_EQ(std::memcmp(g.data(), w.data(), w.num_bytes()), 0) << w.name();
  }
}

const ModelMetadata kModelMetadata = {{"job", "fixture"}, {"round", "7"}};
const ModelMetadata kCheckpointMetadata = {
    {"job", "fixture"}, {"job_id", "job-1"}, {"round", "3"}};

TEST(FormatFixturesTest, AModelStateFileOfThisVersionReadsValueForValue) {
  const std::string path = Fixtures() + "/model.fsm";
  if (Writing()) ASSERT_TRUE(WriteFileAtomically(path, SerializeModelState(Model(), kModelMetadata)).ok());
  StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // The layout, as model_state_file.h documents it.
  ASSERT_GE(bytes->size(), 12u);
  EXPECT_EQ(bytes->substr(0, 4), "FSMS");
  EXPECT_EQ(bytes->substr(4, 4), std::string("\x01\x00\x00\x00", 4));  // version 1
  EXPECT_EQ(bytes->substr(8, 4), std::string("\x00\x00\x00\x00", 4));  // flags
  StatusOr<ModelFile> file = ParseModelState(*bytes, path);
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectSame(file->state, Model());
  EXPECT_EQ(file->metadata, kModelMetadata);
  EXPECT_TRUE(std::signbit(file->state.Find("fc.weight")->floats()[4]));
  // This version writes the same bytes.
  EXPECT_EQ(SerializeModelState(Model(), kModelMetadata), *bytes);
}

TEST(FormatFixturesTest, ARunsCheckpointAndOptimizerStateOfThisVersionRead) {
  const std::string dir = Fixtures() + "/runs/fixture-run/checkpoints";
  const std::string checkpoint = dir + "/round-0003.fsm";
  const std::string strategy = dir + "/round-0003.strategy.fsm";
  ModelState moments;
  ASSERT_TRUE(moments.Add(Tensor::FromFloats("m.fc.weight", {2, 3}, {1, 2, 3, 4, 5, 6})).ok());
  ASSERT_TRUE(moments.Add(Tensor::FromFloats("v.fc.weight", {2, 3}, {6, 5, 4, 3, 2, 1})).ok());
  if (Writing()) {
    ASSERT_TRUE(MakePrivateDir(dir).ok());
    ASSERT_TRUE(WriteFileAtomically(checkpoint, SerializeModelState(Model(), kCheckpointMetadata)).ok());
    ASSERT_TRUE(WriteFileAtomically(strategy, SerializeModelState(moments, {{"round", "3"}})).ok());
  }
  SetFileSealer(nullptr);
  StatusOr<ModelFile> file = ReadModelStateFile(checkpoint);
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectSame(file->state, Model());
  EXPECT_EQ(file->metadata, kCheckpointMetadata);
  StatusOr<ModelFile> state = ReadModelStateFile(strategy);
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectSame(state->state, moments);
}

// A final model sealed (format 2) under the committed test ring, bound to
// its name in the run folder.
TEST(FormatFixturesTest, ASealedFileOfThisVersionOpensWithItsKeyAndOnlyThere) {
  const std::string ring_file = Fixtures() + "/test-storage-keys.yaml";
  const std::string path = Fixtures() + "/runs/fixture-run/final_model.fsm";
  if (Writing()) {
    ASSERT_TRUE(secure::SaveKeyRing(secure::NewKeyRing(), ring_file).ok());
    StatusOr<secure::KeyRing> ring = secure::LoadKeyRing(ring_file);
    ASSERT_TRUE(ring.ok()) << ring.status();
    SetFileSealer(std::make_shared<secure::AeadFileSealer>(*ring));
    ASSERT_TRUE(WriteModelStateFile(path, Model(), kModelMetadata).ok());
    SetFileSealer(nullptr);
  }
  // A checkout gives the ring the umask's mode; the loader wants it private.
  const std::string ring_copy = ::testing::TempDir() + "/fixture-storage-keys.yaml";
  StatusOr<std::string> ring_text = ReadFile(ring_file);
  ASSERT_TRUE(ring_text.ok()) << ring_text.status();
  ASSERT_TRUE(WriteFileAtomically(ring_copy, *ring_text).ok());
  StatusOr<secure::KeyRing> ring = secure::LoadKeyRing(ring_copy);
  ASSERT_TRUE(ring.ok()) << ring.status();

  StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // "FSEAL" | version 2 | key id length | key id | 24-byte nonce | ciphertext and tag
  ASSERT_GT(bytes->size(), 7 + ring->current.size() + 24 + 16);
  EXPECT_EQ(bytes->substr(0, 5), "FSEAL");
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[5]), 2);
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[6]), ring->current.size());
  EXPECT_EQ(bytes->substr(7, ring->current.size()), ring->current);
  EXPECT_EQ(bytes->size(), 7 + ring->current.size() + 24 +
                               SerializeModelState(Model(), kModelMetadata).size() + 16);

  SetFileSealer(std::make_shared<secure::AeadFileSealer>(*ring));
  StatusOr<ModelFile> file = ReadModelStateFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectSame(file->state, Model());
  EXPECT_EQ(file->metadata, kModelMetadata);
  // Bound to "runs/fixture-run/final_model.fsm": under another name it does not open.
  StatusOr<std::string> elsewhere =
      OpenProtectedBytes(*bytes, "runs/fixture-run/checkpoints/round-0003.fsm", path);
  EXPECT_TRUE(absl::IsDataLoss(elsewhere.status())) << elsewhere.status();
  SetFileSealer(nullptr);
  // Without the ring, refused by name.
  EXPECT_THAT(std::string(ReadModelStateFile(path).status().message()),
              ::testing::HasSubstr(path + ": the file is encrypted"));
}

}  // namespace
}  // namespace fedsilo
