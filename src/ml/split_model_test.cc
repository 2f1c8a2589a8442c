#include "ml/split_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <random>

#include "privacy/secure_random.h"

namespace fedsilo::ml {
namespace {

using ::testing::HasSubstr;

TrainingConfig Adam(double lr) {
  TrainingConfig t;
  t.optimizer = OptimizerKind::kAdam;
  t.learning_rate = lr;
  return t;
}

// A torch module holding `state`'s tensors as its own parameters, fcN.weight
// and fcN.bias, with the same layer structure as a LayerStack.
struct Reference {
  std::vector<torch::Tensor> weights, biases;
  bool relu_output = false;
  explicit Reference(const ModelState& state, bool relu_out) : relu_output(relu_out) {
    for (const Tensor& t : state.tensors()) {
      torch::Tensor p = torch::tensor(std::vector<float>(t.floats().begin(), t.floats().end()))
                            .reshape(t.shape())
                            .set_requires_grad(true);
      (t.name().find("weight") != std::string::npos ? weights : biases).push_back(p);
    }
  }
  torch::Tensor Forward(torch::Tensor x) const {
    for (size_t i = 0; i < weights.size(); ++i) {
      x = torch::linear(x, weights[i], biases[i]);
      if (i + 1 < weights.size() || relu_output) x = torch::relu(x);
    }
    return x;
  }
  std::vector<torch::Tensor> Parameters() const {
    std::vector<torch::Tensor> all = weights;
    all.insert(all.end(), biases.begin(), biases.end());
    return all;
  }
  double MaxDifference(const ModelState& state) const {
    double most = 0;
    size_t w = 0, b = 0;
    for (const Tensor& t : state.tensors()) {
      const torch::Tensor& p =
          t.name().find("weight") != std::string::npos ? weights[w++] : biases[b++];
      const torch::Tensor flat = p.detach().reshape({-1}).contiguous();
      for (size_t i = 0; i < t.floats().size(); ++i) {
        most = std::max(most,
                        std::abs(static_cast<double>(t.floats()[i]) - flat.data_ptr<float>()[i]));
      }
    }
    return most;
  }
};

std::vector<float> Slice(const std::vector<float>& x, int64_t rows, int64_t width, int64_t from,
                         int64_t count) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r) {
    out.insert(out.end(), x.begin() + r * width + from, x.begin() + r * width + from + count);
  }
  return out;
}

// Two parties' bottom models and a top model trained step by step through
// their float interfaces -- what a vertical job does across silos -- end
// with the weights of the one concatenated model trained centrally on the
// joined rows by libtorch, with one optimizer over all its parameters.
TEST(SplitModelTest, SplitStepsEqualTrainingTheConcatenatedModelCentrally) {
  const TrainingConfig training = Adam(0.02);
  auto a = LayerStack::Create({3, {5}, 4, true, false}, training, 11);
  auto b = LayerStack::Create({2, {}, 4, true, false}, training, 12);
  auto top = LayerStack::Create({8, {6}, 2, false, true}, training, 13);
  ASSERT_TRUE(a.ok() && b.ok() && top.ok());
  Reference ra((*a)->GetState(), true), rb((*b)->GetState(), true), rt((*top)->GetState(), false);
  std::vector<torch::Tensor> all;
  for (const Reference* r : {&ra, &rb, &rt}) {
    for (const torch::Tensor& p : r->Parameters()) all.push_back(p);
  }
  torch::optim::Adam central(all, torch::optim::AdamOptions(0.02));

  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 1);
  const int64_t rows = 16;
  for (int step = 0; step < 25; ++step) {
    std::vector<float> xa(rows * 3), xb(rows * 2);
    std::vector<int64_t> y(rows);
    for (int64_t r = 0; r < rows; ++r) {
      for (int j = 0; j < 3; ++j) xa[r * 3 + j] = g(rng);
      for (int j = 0; j < 2; ++j) xb[r * 2 + j] = g(rng);
      y[r] = xa[r * 3] + xb[r * 2 + 1] > 0 ? 1 : 0;
    }
    // Split: each party's cut layer, the top model's step, each party's.
    StatusOr<std::vector<float>> ha = (*a)->Forward(xa, rows, true);
    StatusOr<std::vector<float>> hb = (*b)->Forward(xb, rows, true);
    ASSERT_TRUE(ha.ok() && hb.ok());
    std::vector<float> joined;
    for (int64_t r = 0; r < rows; ++r) {
      joined.insert(joined.end(), ha->begin() + r * 4, ha->begin() + r * 4 + 4);
      joined.insert(joined.end(), hb->begin() + r * 4, hb->begin() + r * 4 + 4);
    }
    StatusOr<std::vector<float>> logits = (*top)->Forward(joined, rows, true);
    ASSERT_TRUE(logits.ok());
    StatusOr<CrossEntropy> ce = CrossEntropyOf(*logits, rows, 2, y);
    ASSERT_TRUE(ce.ok());
    StatusOr<std::vector<float>> d_joined = (*top)->Backward(ce->gradient);
    ASSERT_TRUE(d_joined.ok());
    ASSERT_TRUE((*a)->Backward(Slice(*d_joined, rows, 8, 0, 4)).ok());
    ASSERT_TRUE((*b)->Backward(Slice(*d_joined, rows, 8, 4, 4)).ok());

    // Central: the joined rows through the concatenated model.
    torch::Tensor ta = torch::tensor(xa).reshape({rows, 3});
    torch::Tensor tb = torch::tensor(xb).reshape({rows, 2});
    torch::Tensor out = rt.Forward(torch::cat({ra.Forward(ta), rb.Forward(tb)}, 1));
    torch::Tensor loss = torch::nn::functional::cross_entropy(out, torch::tensor(y));
    EXPECT_NEAR(loss.item<double>(), ce->loss, 1e-5) << "step " << step;
    central.zero_grad();
    loss.backward();
    central.step();
  }
  EXPECT_LT(ra.MaxDifference((*a)->GetState()), 1e-5);
  EXPECT_LT(rb.MaxDifference((*b)->GetState()), 1e-5);
  EXPECT_LT(rt.MaxDifference((*top)->GetState()), 1e-5);
  // And it learned: the weights moved from where they started.
  EXPECT_GT(Reference((*a)->GetState(), true)
                .MaxDifference(
                    LayerStack::Create({3, {5}, 4, true, false}, training, 11).value()->GetState()),
            1e-3);
}

TEST(SplitModelTest, CrossEntropyGradientIsSoftmaxMinusOneHotOverRows) {
  const std::vector<float> logits = {2.0f, 0.0f, -1.0f, 1.0f};
  StatusOr<CrossEntropy> ce = CrossEntropyOf(logits, 2, 2, std::vector<int64_t>{0, 1});
  ASSERT_TRUE(ce.ok()) << ce.status();
  const double p0 = 1 / (1 + std::exp(-2.0)), p1 = 1 / (1 + std::exp(-2.0));
  EXPECT_NEAR(ce->loss, -(std::log(p0) + std::log(p1)) / 2, 1e-6);
  EXPECT_NEAR(ce->gradient[0], (p0 - 1) / 2, 1e-6);
  EXPECT_NEAR(ce->gradient[1], (1 - p0) / 2, 1e-6);
  EXPECT_NEAR(ce->gradient[3], (p1 - 1) / 2, 1e-6);
  EXPECT_FALSE(CrossEntropyOf(logits, 2, 2, std::vector<int64_t>{0, 2}).ok());
  EXPECT_FALSE(CrossEntropyOf(logits, 3, 2, std::vector<int64_t>{0, 1, 1}).ok());
}

TEST(SplitModelTest, MisshapenInputsAndGradientsAreRefused) {
  auto s = LayerStack::Create({3, {}, 2, false, true}, Adam(0.1), 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->Backward(std::vector<float>(4)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string((*s)->Forward(std::vector<float>(5), 2, true).status().message()),
              HasSubstr("expected 2 rows of 3 values"));
  ASSERT_TRUE((*s)->Forward(std::vector<float>(6, 1.0f), 2, true).ok());
  EXPECT_EQ((*s)->Backward(std::vector<float>(3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  StatusOr<std::vector<float>> d = (*s)->Backward(std::vector<float>(4, 0.5f));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size(), 6u);  // the input gradient, 2 rows of 3
  EXPECT_FALSE(LayerStack::Create({0, {}, 2, false, false}, Adam(0.1), 1).ok());
}

// A party's initial weights: every tensor of two or more dimensions uniform
// within 1/sqrt(fan_in), the `bias` beside it too, the rest as it was; the
// same generator key gives the same weights, another key others.
TEST(SplitModelTest, InitialWeightsAreDrawnFromThePartysGenerator) {
  auto stack = LayerStack::Create({6, {4}, 3, true, false}, Adam(0.1), 1);
  ASSERT_TRUE(stack.ok());
  const auto draw = [&](uint8_t k) {
    privacy::SecureRandom::Key key{};
    key[0] = k;
    privacy::SecureRandom random = privacy::SecureRandom::WithKeyForTesting(key);
    EXPECT_TRUE(DrawInitialWeights(**stack, random).ok());
    return (*stack)->GetState();
  };
  const ModelState a = draw(1), b = draw(2), again = draw(1);
  ASSERT_EQ(a.tensors().size(), 4u);  // fc1.weight [4, 6], fc1.bias, fc2.weight [3, 4], fc2.bias
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const Tensor& t = a.tensors()[i];
    const double bound = 1 / std::sqrt(t.name().rfind("fc1.", 0) == 0 ? 6.0 : 4.0);
    float largest = 0;
    for (float v : t.floats()) largest = std::max(largest, std::abs(v));
    EXPECT_LE(largest, bound + 1e-6) << t.name();
    EXPECT_GT(largest, bound / 4) << t.name();
    EXPECT_EQ(t.floats(), again.tensors()[i].floats()) << t.name();
    EXPECT_NE(t.floats(), b.tensors()[i].floats()) << t.name();
  }
}

}  // namespace
}  // namespace fedsilo::ml
