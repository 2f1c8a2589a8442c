#include "core/model_state_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

namespace fedsilo {
namespace {

using ::testing::HasSubstr;

ModelState Sample() {
  ModelState s;
  EXPECT_TRUE(
      s.Add(Tensor::FromFloats("conv1.weight", {2, 1, 2, 2}, {1, -2, 3.5f, 4, 5, 6, 7, 8e-9f}))
          .ok());
  EXPECT_TRUE(s.Add(Tensor::FromFloats("conv1.bias", {2}, {0.25f, -0.5f})).ok());
  Tensor steps("bn.num_batches_tracked", DType::kInt64, {});
  int64_t seven = 7;
  std::memcpy(steps.data(), &seven, sizeof(seven));
  EXPECT_TRUE(s.Add(std::move(steps)).ok());
  return s;
}

void ExpectEqualStates(const ModelState& a, const ModelState& b) {
  ASSERT_TRUE(a.CheckSameLayout(b).ok());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(
        0, std::memcmp(a.tensors()[i].data(), b.tensors()[i].data(), a.tensors()[i].num_bytes()));
  }
}

TEST(ModelStateFileTest, RoundTripsTensorsAndMetadata) {
  const std::string bytes = SerializeModelState(Sample(), {{"round", "3"}, {"run_id", "r1"}});
  StatusOr<ModelFile> file = ParseModelState(bytes, "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectEqualStates(file->state, Sample());
  EXPECT_EQ(file->metadata.at("round"), "3");
  EXPECT_EQ(file->metadata.at("run_id"), "r1");
}

TEST(ModelStateFileTest, EmptyStateRoundTrips) {
  StatusOr<ModelFile> file = ParseModelState(SerializeModelState(ModelState()), "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->state.empty());
}

TEST(ModelStateFileTest, EveryTruncationIsAnErrorNamingTheSource) {
  const std::string bytes = SerializeModelState(Sample(), {{"round", "3"}});
  for (size_t n = 0; n < bytes.size(); ++n) {
    StatusOr<ModelFile> file = ParseModelState(absl::string_view(bytes.data(), n), "ckpt.fsm");
    ASSERT_FALSE(file.ok()) << "accepted a file truncated to " << n << " bytes";
    EXPECT_THAT(file.status().message(), HasSubstr("ckpt.fsm")) << n;
    if (n >= 8) {
      EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << n << ": " << file.status();
    }
  }
}

TEST(ModelStateFileTest, EveryFlippedByteIsDetected) {
  const std::string bytes = SerializeModelState(Sample());
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] = static_cast<char>(damaged[i] ^ 0x10);
    StatusOr<ModelFile> file = ParseModelState(damaged, "m.fsm");
    ASSERT_FALSE(file.ok()) << "accepted a flip at byte " << i;
  }
  std::string damaged = bytes;
  damaged[bytes.size() / 2] ^= 1;  // inside tensor data
  EXPECT_THAT(ParseModelState(damaged, "m.fsm").status().message(), HasSubstr("checksum mismatch"));
}

TEST(ModelStateFileTest, RejectsOtherFilesAndNewerVersions) {
  StatusOr<ModelFile> other = ParseModelState("PK\x03\x04 this is a zip file", "x.zip");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other.status().message(), HasSubstr("not a fedsilo model file"));

  std::string bytes = SerializeModelState(Sample());
  bytes[4] = 99;  // version field
  StatusOr<ModelFile> newer = ParseModelState(bytes, "new.fsm");
  EXPECT_EQ(newer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(newer.status().message(), HasSubstr("version 99 is not supported"));
}

TEST(ModelStateFileTest, FilesRoundTripAndMissingFilesAreNotFound) {
  const std::string dir = ::testing::TempDir() + "/fsm_test";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/model.fsm";
  ASSERT_TRUE(WriteModelStateFile(path, Sample(), {{"k", "v"}}).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  StatusOr<ModelFile> file = ReadModelStateFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectEqualStates(file->state, Sample());

  StatusOr<ModelFile> missing = ReadModelStateFile(dir + "/nope.fsm");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.fsm"));

  // A file cut short on disk, as a crash during a copy would leave it.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  StatusOr<ModelFile> cut = ReadModelStateFile(path);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(cut.status().message(), HasSubstr("model.fsm: truncated"));
}

}  // namespace
}  // namespace fedsilo
