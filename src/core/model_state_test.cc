#include "core/model_state.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace fedsilo {
namespace {

using ::testing::HasSubstr;

ModelState TwoTensors() {
  ModelState s;
  EXPECT_TRUE(s.Add(Tensor::FromFloats("fc1.weight", {2, 3}, {1, 2, 3, 4, 5, 6})).ok());
  EXPECT_TRUE(s.Add(Tensor::FromFloats("fc1.bias", {2}, {7, 8})).ok());
  return s;
}

TEST(ModelStateTest, KeepsOrderAndFindsByName) {
  ModelState s = TwoTensors();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s.tensors()[0].name(), "fc1.weight");
  EXPECT_EQ(s.num_elements(), 8);
  ASSERT_NE(s.Find("fc1.bias"), nullptr);
  EXPECT_EQ(s.Find("fc1.bias")->floats()[1], 8.0f);
  EXPECT_EQ(s.Find("nope"), nullptr);
}

TEST(ModelStateTest, RejectsDuplicateAndEmptyNames) {
  ModelState s = TwoTensors();
  Status dup = s.Add(Tensor::FromFloats("fc1.bias", {1}, {0}));
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.message(), HasSubstr("fc1.bias"));
  EXPECT_FALSE(s.Add(Tensor("", DType::kFloat32, {1})).ok());
}

TEST(ModelStateTest, CopiesAreDeep) {
  ModelState a = TwoTensors();
  ModelState b = a;
  b.mutable_tensors()[0].floats()[0] = 100;
  EXPECT_EQ(a.tensors()[0].floats()[0], 1.0f);
}

TEST(ModelStateTest, LayoutMismatchNamesTheTensor) {
  ModelState a = TwoTensors();
  ModelState b;
  ASSERT_TRUE(b.Add(Tensor::FromFloats("fc1.weight", {3, 2}, {1, 2, 3, 4, 5, 6})).ok());
  ASSERT_TRUE(b.Add(Tensor::FromFloats("fc1.bias", {2}, {7, 8})).ok());
  Status s = b.CheckSameLayout(a);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'fc1.weight' has shape [3, 2], expected [2, 3]"));
  EXPECT_TRUE(a.CheckSameLayout(TwoTensors()).ok());

  ModelState renamed;
  ASSERT_TRUE(renamed.Add(Tensor::FromFloats("w", {2, 3}, {1, 2, 3, 4, 5, 6})).ok());
  ASSERT_TRUE(renamed.Add(Tensor::FromFloats("fc1.bias", {2}, {7, 8})).ok());
  EXPECT_THAT(renamed.CheckSameLayout(a).message(), HasSubstr("named 'w', expected 'fc1.weight'"));
  EXPECT_THAT(ModelState().CheckSameLayout(a).message(), HasSubstr("0 tensors, expected 2"));
}

TEST(ModelStateTest, CheckFiniteFindsNanAndInfinity) {
  ModelState s = TwoTensors();
  EXPECT_TRUE(s.CheckFinite().ok());
  s.mutable_tensors()[1].floats()[1] = std::numeric_limits<float>::quiet_NaN();
  Status st = s.CheckFinite();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("'fc1.bias'"));
  EXPECT_THAT(st.message(), HasSubstr("index 1"));
  s.mutable_tensors()[1].floats()[1] = INFINITY;
  EXPECT_FALSE(s.CheckFinite().ok());
}

TEST(ModelStateTest, ZerosLikeKeepsLayout) {
  ModelState z = TwoTensors().ZerosLike();
  EXPECT_TRUE(z.CheckSameLayout(TwoTensors()).ok());
  for (const Tensor& t : z.tensors()) {
    for (float v : t.floats()) EXPECT_EQ(v, 0.0f);
  }
}

}  // namespace
}  // namespace fedsilo
