#include "ml/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <dlfcn.h>
#include <torch/script.h>

#include <ATen/Parallel.h>

#include <cstring>
#include <random>
#include <thread>

#include "core/model_state_file.h"
#include "ml/sandbox.h"
#include "privacy/secure_random.h"

namespace fedsilo::ml {
namespace {

using ::testing::HasSubstr;

// Linearly separable: label = (x0 + x1 > 0), plus two noise features.
std::shared_ptr<Dataset> Separable(int n, unsigned seed) {
  auto d = std::make_shared<Dataset>();
  d->example_shape = {4};
  d->num_classes = 2;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  for (int i = 0; i < n; ++i) {
    float x[4] = {g(rng), g(rng), g(rng), g(rng)};
    d->features.insert(d->features.end(), x, x + 4);
    d->labels.push_back(x[0] + x[1] > 0 ? 1 : 0);
  }
  return d;
}

ModelSpec Spec(ModelKind kind, std::vector<int> hidden = {8}) {
  ModelSpec s;
  s.config.kind = kind;
  s.config.hidden = std::move(hidden);
  s.input_shape = {4};
  s.num_classes = 2;
  return s;
}

TrainingConfig Sgd(int epochs) {
  TrainingConfig t;
  t.local_epochs = epochs;
  t.batch_size = 16;
  t.learning_rate = 0.1;
  return t;
}

TEST(ModelTest, BuiltInModelsHaveTheExpectedParameters) {
  auto logistic = Model::Create(Spec(ModelKind::kLogistic), 1);
  ASSERT_TRUE(logistic.ok()) << logistic.status();
  EXPECT_EQ((*logistic)->num_parameters(), 4 * 2 + 2);
  ModelState s = (*logistic)->GetState();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s.tensors()[0].name(), "fc1.weight");
  EXPECT_EQ(s.tensors()[0].shape(), (std::vector<int64_t>{2, 4}));

  ModelSpec two_nn;
  two_nn.config.kind = ModelKind::kMlp;
  two_nn.config.hidden = {200, 200};
  two_nn.input_shape = {1, 28, 28};
  two_nn.num_classes = 10;
  auto mlp = Model::Create(two_nn, 1);
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ((*mlp)->num_parameters(), 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10);

  // McMahan et al.'s CNN has 1,663,370 parameters.
  ModelSpec cnn = two_nn;
  cnn.config.kind = ModelKind::kCnn;
  auto conv = Model::Create(cnn, 1);
  ASSERT_TRUE(conv.ok()) << conv.status();
  EXPECT_EQ((*conv)->num_parameters(), 1663370);
}

TEST(ModelTest, CnnNeedsImages) {
  auto conv = Model::Create(Spec(ModelKind::kCnn), 1);
  EXPECT_EQ(conv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(conv.status().message(), HasSubstr("model.name: cnn needs image data"));
}

TEST(ModelTest, SameSeedSameWeights) {
  auto a = Model::Create(Spec(ModelKind::kMlp), 3);
  auto b = Model::Create(Spec(ModelKind::kMlp), 3);
  auto c = Model::Create(Spec(ModelKind::kMlp), 4);
  const ModelState sa = (*a)->GetState(), sb = (*b)->GetState(), sc = (*c)->GetState();
  EXPECT_EQ(
      0, std::memcmp(sa.tensors()[0].data(), sb.tensors()[0].data(), sa.tensors()[0].num_bytes()));
  EXPECT_NE(
      0, std::memcmp(sa.tensors()[0].data(), sc.tensors()[0].data(), sa.tensors()[0].num_bytes()));
}

TEST(ModelTest, SetStateRoundTripsAndRejectsOtherLayouts) {
  auto a = Model::Create(Spec(ModelKind::kMlp), 3);
  auto b = Model::Create(Spec(ModelKind::kMlp), 4);
  ASSERT_TRUE((*b)->SetState((*a)->GetState()).ok());
  const ModelState sa = (*a)->GetState(), sb = (*b)->GetState();
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(sa.tensors()[i].data(), sb.tensors()[i].data(),
                             sa.tensors()[i].num_bytes()));
  }
  auto wider = Model::Create(Spec(ModelKind::kMlp, {16}), 3);
  Status s = (*a)->SetState((*wider)->GetState());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'fc1.weight' has shape [16, 4], expected [8, 4]"));
}

TEST(ModelTest, TrainingLearnsASeparableProblem) {
  auto train = Separable(600, 1), test = Separable(300, 2);
  auto model = Model::Create(Spec(ModelKind::kLogistic), 1);
  auto before = (*model)->Evaluate(DataView::All(test));
  ASSERT_TRUE(before.ok());
  auto stats = (*model)->Train(DataView::All(train), Sgd(5), 7);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->examples, 600);
  EXPECT_EQ(stats->steps, 5 * ((600 + 15) / 16));
  auto after = (*model)->Evaluate(DataView::All(test));
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->accuracy, 0.93);
  EXPECT_LT(after->loss, before->loss);
  EXPECT_TRUE(after->binary);
  EXPECT_GT(after->auc, 0.97);
  EXPECT_GT(after->precision, 0.85);
  EXPECT_GT(after->recall, 0.85);
}

// FedProx: the proximal pull is zero at the start (one step is unchanged)
// and keeps longer local training closer to where it started.
TEST(ModelTest, ProximalTermPullsTowardsTheStartingWeights) {
  auto train = Separable(400, 5);
  auto distance = [&](int epochs, int batch, double mu, ModelState* after) {
    auto model = Model::Create(Spec(ModelKind::kMlp), 3);
    const ModelState start = (*model)->GetState();
    TrainingConfig t = Sgd(epochs);
    t.batch_size = batch;
    t.learning_rate = 0.1;
    LocalObjective objective;
    objective.proximal_mu = mu;
    EXPECT_TRUE((*model)->Train(DataView::All(train), t, 9, nullptr, objective).ok());
    *after = (*model)->GetState();
    double squares = 0;
    for (size_t i = 0; i < start.size(); ++i) {
      for (int64_t j = 0; j < start.tensors()[i].num_elements(); ++j) {
        const double d = after->tensors()[i].floats()[j] - start.tensors()[i].floats()[j];
        squares += d * d;
      }
    }
    return std::sqrt(squares);
  };
  ModelState plain, prox;
  EXPECT_EQ(distance(1, 400, 0.0, &plain), distance(1, 400, 5.0, &prox));  // one full-batch step
  EXPECT_EQ(SerializeModelState(plain), SerializeModelState(prox));
  const double free = distance(5, 16, 0.0, &plain);
  const double pulled = distance(5, 16, 5.0, &prox);
  EXPECT_LT(pulled, 0.5 * free);
  EXPECT_GT(pulled, 0);
}

// Expects `prox` to differ from `plain`, value for value, by FedProx's term
// on a second step: -lr x mu x (w1 - w0), w1 being where the first step left
// both from w0. Returns those differences.
std::vector<double> ExpectProximalShift(const ModelState& w0, const ModelState& w1,
                                        const ModelState& plain, const ModelState& prox,
                                        double lr, double mu) {
  std::vector<double> shifts;
  for (size_t k = 0; k < plain.size(); ++k) {
    for (int64_t i = 0; i < plain.tensors()[k].num_elements(); ++i) {
      const double moved = w1.tensors()[k].floats()[i] - w0.tensors()[k].floats()[i];
      const double expected = -lr * mu * moved;
      EXPECT_NEAR(prox.tensors()[k].floats()[i] - plain.tensors()[k].floats()[i], expected, 1e-6)
          << plain.tensors()[k].name() << "[" << i << "]";
      shifts.push_back(expected);
    }
  }
  return shifts;
}

// FedProx's term, by hand: after one full-batch step both runs are at w1;
// the second step's gradient gains mu (w1 - w0), so with plain SGD the two
// runs then differ by exactly -lr x mu x (w1 - w0).
TEST(ModelTest, ProximalTermAddsMuTimesTheDistanceFromTheStart) {
  auto train = Separable(200, 8);
  TrainingConfig t = Sgd(1);
  t.batch_size = 200;
  t.learning_rate = 0.5;
  constexpr double kMu = 0.3;
  auto one_step = Model::Create(Spec(ModelKind::kLogistic), 4);
  const ModelState w0 = (*one_step)->GetState();
  ASSERT_TRUE((*one_step)->Train(DataView::All(train), t, 1).ok());
  const ModelState w1 = (*one_step)->GetState();
  t.local_epochs = 2;
  auto plain = Model::Create(Spec(ModelKind::kLogistic), 4);
  auto prox = Model::Create(Spec(ModelKind::kLogistic), 4);
  LocalObjective objective;
  objective.proximal_mu = kMu;
  ASSERT_TRUE((*plain)->Train(DataView::All(train), t, 1).ok());
  ASSERT_TRUE((*prox)->Train(DataView::All(train), t, 1, nullptr, objective).ok());
  double largest_shift = 0;
  for (double shift : ExpectProximalShift(w0, w1, (*plain)->GetState(), (*prox)->GetState(),
                                          t.learning_rate, kMu)) {
    largest_shift = std::max(largest_shift, std::abs(shift));
  }
  EXPECT_GT(largest_shift, 1e-3);  // the check is not vacuous
}

// SCAFFOLD's correction: one full-batch SGD step moves every parameter by
// an extra -learning_rate x correction.
TEST(ModelTest, GradientCorrectionShiftsEachStep) {
  auto train = Separable(200, 6);
  TrainingConfig t = Sgd(1);
  t.batch_size = 200;
  t.learning_rate = 0.5;
  auto plain = Model::Create(Spec(ModelKind::kLogistic), 4);
  auto corrected = Model::Create(Spec(ModelKind::kLogistic), 4);
  ModelState correction = (*plain)->GetState().ZerosLike();
  for (Tensor& c : correction.mutable_tensors()) {
    for (size_t i = 0; i < c.floats().size(); ++i) c.floats()[i] = 0.1f * static_cast<float>(i + 1);
  }
  LocalObjective objective;
  objective.gradient_correction = &correction;
  ASSERT_TRUE((*plain)->Train(DataView::All(train), t, 1).ok());
  ASSERT_TRUE((*corrected)->Train(DataView::All(train), t, 1, nullptr, objective).ok());
  const ModelState a = (*plain)->GetState(), b = (*corrected)->GetState();
  for (size_t k = 0; k < a.size(); ++k) {
    for (size_t i = 0; i < a.tensors()[k].floats().size(); ++i) {
      EXPECT_NEAR(b.tensors()[k].floats()[i] - a.tensors()[k].floats()[i],
                  -0.5 * correction.tensors()[k].floats()[i], 1e-5);
    }
  }
  ModelState wrong;
  ASSERT_TRUE(wrong.Add(Tensor::FromFloats("x", {1}, {1.f})).ok());
  objective.gradient_correction = &wrong;
  EXPECT_FALSE((*corrected)->Train(DataView::All(train), t, 1, nullptr, objective).ok());
}

TEST(ModelTest, AdamAndMomentumTrainToo) {
  auto train = Separable(400, 3), test = Separable(200, 4);
  for (OptimizerKind opt : {OptimizerKind::kAdam, OptimizerKind::kSgd}) {
    auto model = Model::Create(Spec(ModelKind::kMlp), 1);
    TrainingConfig t = Sgd(3);
    t.optimizer = opt;
    t.momentum = opt == OptimizerKind::kSgd ? 0.9 : 0.0;
    t.learning_rate = opt == OptimizerKind::kAdam ? 0.01 : 0.05;
    t.weight_decay = 1e-4;
    ASSERT_TRUE((*model)->Train(DataView::All(train), t, 1).ok());
    EXPECT_GT((*model)->Evaluate(DataView::All(test))->accuracy, 0.9) << OptimizerKindName(opt);
  }
}

TEST(ModelTest, TrainingIsDeterministicInTheSeed) {
  auto data = Separable(200, 5);
  std::vector<ModelState> results;
  for (uint64_t seed : {9, 9, 10}) {
    auto model = Model::Create(Spec(ModelKind::kMlp), 1);
    ASSERT_TRUE((*model)->Train(DataView::All(data), Sgd(2), seed).ok());
    results.push_back((*model)->GetState());
  }
  const Tensor& a = results[0].tensors()[0];
  EXPECT_EQ(0, std::memcmp(a.data(), results[1].tensors()[0].data(), a.num_bytes()));
  EXPECT_NE(0, std::memcmp(a.data(), results[2].tensors()[0].data(), a.num_bytes()));
}

TEST(ModelTest, DivergenceAndEmptyDataAreErrors) {
  auto data = Separable(100, 6);
  for (float& v : data->features) v *= 1e30f;
  auto model = Model::Create(Spec(ModelKind::kLogistic), 1);
  TrainingConfig t = Sgd(1);
  t.learning_rate = 100;
  auto stats = (*model)->Train(DataView::All(data), t, 1);
  EXPECT_FALSE(stats.ok());
  EXPECT_THAT(stats.status().message(), HasSubstr("training.learning_rate"));

  DataView empty;
  empty.dataset = data;
  EXPECT_FALSE((*model)->Train(empty, Sgd(1), 1).ok());
  EXPECT_FALSE((*model)->Evaluate(empty).ok());
}

// Small 6x6 "images" for the CNN's per-example gradients.
std::shared_ptr<Dataset> Images(int n, unsigned seed) {
  auto d = std::make_shared<Dataset>();
  d->example_shape = {1, 6, 6};
  d->num_classes = 3;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < 36; ++j) d->features.push_back(g(rng));
    d->labels.push_back(i % 3);
  }
  return d;
}

// The fast per-example gradient norms (one backward pass per batch) agree
// with one backward pass per example, for every layer kind DP-SGD handles.
TEST(ModelTest, PerExampleGradientNormsMatchOneBackwardPerExample) {
  struct Case {
    ModelSpec spec;
    std::shared_ptr<Dataset> data;
  };
  ModelSpec cnn;
  cnn.config.kind = ModelKind::kCnn;
  cnn.input_shape = {1, 6, 6};
  cnn.num_classes = 3;
  for (const Case& c :
       {Case{Spec(ModelKind::kLogistic), Separable(12, 3)},
        Case{Spec(ModelKind::kMlp, {8, 5}), Separable(12, 4)}, Case{cnn, Images(7, 5)}}) {
    auto model = Model::Create(c.spec, 9);
    ASSERT_TRUE(model.ok()) << model.status();
    DataView all = DataView::All(c.data);
    auto fast = (*model)->PerExampleGradientNorms(all, false);
    auto slow = (*model)->PerExampleGradientNorms(all, true);
    ASSERT_TRUE(fast.ok()) << fast.status();
    ASSERT_TRUE(slow.ok()) << slow.status();
    ASSERT_EQ(fast->size(), slow->size());
    for (size_t i = 0; i < fast->size(); ++i) {
      EXPECT_NEAR((*fast)[i], (*slow)[i], 1e-4 * (*slow)[i] + 1e-6)
          << ModelKindName(c.spec.config.kind) << " example " << i;
      EXPECT_GT((*slow)[i], 0);
    }
  }
}

// Without noise, one DP-SGD step (full batch, q = 1) moves the weights by the
// learning rate times the mean of the clipped gradients: with a tiny clipping
// norm every example's contribution is cut to that norm, so the step is at
// most lr x C whatever the gradients were.
TEST(ModelTest, DpSgdClipsEachExampleAndAddsCalibratedNoise) {
  auto data = Separable(64, 7);
  TrainingConfig t = Sgd(1);
  t.batch_size = 64;  // q = 1: every example in the one step
  t.learning_rate = 1.0;
  auto step_norm = [&](double noise, double clip, uint64_t secret) {
    auto model = Model::Create(Spec(ModelKind::kLogistic), 2);
    ModelState before = (*model)->GetState();
    privacy::SecureRandom::Key key{};
    key[0] = static_cast<uint8_t>(secret);
    auto random = privacy::SecureRandom::WithKeyForTesting(key);
    DpSgdOptions dp{noise, clip, &random};
    auto stats = (*model)->Train(DataView::All(data), t, 0, &dp);
    EXPECT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->steps, 1);
    ModelState after = (*model)->GetState();
    double n2 = 0;
    for (size_t i = 0; i < after.size(); ++i) {
      auto a = after.tensors()[i].floats();
      auto b = before.tensors()[i].floats();
      for (size_t j = 0; j < a.size(); ++j) n2 += (a[j] - b[j]) * (a[j] - b[j]);
    }
    return std::sqrt(n2);
  };
  const double clipped = step_norm(0, 1e-3, 1);
  EXPECT_GT(clipped, 0);
  EXPECT_LE(clipped, 1e-3 * (1 + 1e-4));
  // Noise: standard deviation sigma x C on the sum, divided by q N = 64 per
  // coordinate. With sigma 200 it dwarfs the (at most C) clipped signal: the
  // step's norm over the 10 coordinates is about sqrt(10) x 200 / 64.
  const double noisy = step_norm(200.0, 1.0, 3);
  const double expected = std::sqrt(10.0) * 200.0 / 64.0;
  EXPECT_GT(noisy, 0.5 * expected);
  EXPECT_LT(noisy, 2.0 * expected);
  // The noise comes from the generator's key, not the job's seed.
  EXPECT_NE(step_norm(5.0, 1.0, 3), step_norm(5.0, 1.0, 4));
  EXPECT_EQ(step_norm(5.0, 1.0, 3), step_norm(5.0, 1.0, 3));
  // Without one, each call draws a key of its own from the operating system.
  auto os_keyed = [&] {
    auto model = Model::Create(Spec(ModelKind::kLogistic), 2);
    DpSgdOptions dp{5.0, 1.0, nullptr};
    EXPECT_TRUE((*model)->Train(DataView::All(data), t, 0, &dp).ok());
    return (*model)->GetState();
  };
  EXPECT_NE(os_keyed().tensors()[0].floats()[0], os_keyed().tensors()[0].floats()[0]);
}

// With DP-SGD, FedProx's term joins the gradient after the noise: it is
// neither clipped with the examples nor divided by the expected batch. Two
// runs with the same generator key draw the same batches and noise, so their
// second steps differ by exactly -lr x mu x (w1 - w0), w1 being where the
// first (term-free) step left both. Had the term been clipped with the
// examples (clip 0.01 here, far below mu x |w1 - w0|) or averaged, the
// difference would be smaller. The noise (sigma 1000) moves the first step
// far from the start, so the term is large.
TEST(ModelTest, ProximalTermIsAddedAfterDpSgdsNoise) {
  auto data = Separable(64, 7);
  TrainingConfig t = Sgd(1);
  t.batch_size = 64;  // q = 1: every example in each step
  t.learning_rate = 1.0;
  constexpr double kMu = 0.5;
  constexpr double kClip = 0.01;
  privacy::SecureRandom::Key key{};
  key[0] = 42;
  auto train = [&](int epochs, double mu) {
    auto model = Model::Create(Spec(ModelKind::kMlp), 2);
    auto random = privacy::SecureRandom::WithKeyForTesting(key);
    DpSgdOptions dp{1000.0, kClip, &random};
    TrainingConfig config = t;
    config.local_epochs = epochs;
    LocalObjective objective;
    objective.proximal_mu = mu;
    auto stats = (*model)->Train(DataView::All(data), config, 0, &dp, objective);
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (stats.ok()) {
      EXPECT_EQ(stats->steps, epochs);
    }
    return (*model)->GetState();
  };
  const ModelState w0 = (*Model::Create(Spec(ModelKind::kMlp), 2))->GetState();
  const ModelState w1 = train(1, 0);
  const ModelState plain = train(2, 0);
  const ModelState prox = train(2, kMu);
  double shift2 = 0;
  for (double shift : ExpectProximalShift(w0, w1, plain, prox, t.learning_rate, kMu)) {
    shift2 += shift * shift;
  }
  EXPECT_GT(std::sqrt(shift2), 10 * kClip);  // the term was not clipped
}

// Each silo trains with one libtorch (OpenMP) thread and one BLAS thread:
// parallelism comes from training silos side by side. Checked on a fresh
// thread, as a silo's training thread is: OpenMP's count is per thread.
TEST(ModelTest, TrainingRunsOnOneLibtorchAndOneBlasThread) {
  int torch_threads = 0, blas_threads = -1;
  std::thread trainer([&] {
    at::set_num_threads(2);  // what the thread would have otherwise, on any machine
    auto data = Separable(64, 3);
    auto model = Model::Create(Spec(ModelKind::kLogistic), 1);
    ASSERT_TRUE(model.ok());
    ASSERT_TRUE((*model)->Train(DataView::All(data), Sgd(1), 0).ok());
    torch_threads = at::get_num_threads();
    using GetThreads = int (*)();
    if (auto f = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) {
      blas_threads = f();
    }
  });
  trainer.join();
  EXPECT_EQ(torch_threads, 1);
  // OpenBLAS is what scripts/setup installs; libtorch may use another BLAS.
  if (blas_threads != -1) {
    EXPECT_EQ(blas_threads, 1);
  }
}

TEST(ModelTest, DpSgdStillLearns) {
  auto data = Separable(512, 11);
  auto model = Model::Create(Spec(ModelKind::kLogistic), 3);
  TrainingConfig t = Sgd(5);
  t.batch_size = 64;
  t.learning_rate = 0.5;
  DpSgdOptions dp{0.8, 1.0, nullptr};
  auto stats = (*model)->Train(DataView::All(data), t, 0, &dp);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->steps, 5 * DpStepsPerEpoch(512, 64));
  auto eval = (*model)->Evaluate(DataView::All(Separable(512, 12)));
  ASSERT_TRUE(eval.ok());
  EXPECT_GT(eval->accuracy, 0.85);
  EXPECT_DOUBLE_EQ(DpSampleRate(512, 64), 0.125);
  EXPECT_EQ(DpStepsPerEpoch(100, 64), 2);
  EXPECT_EQ(DpStepsPerEpoch(10, 64), 1);
}

// examples/torchscript/digits_net.pt, written by make_model.py: 64 -> 32
// (batch norm, ReLU) -> 10.
std::string DigitsNetFile() {
  return std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/torchscript/digits_net.pt";
}

// TorchScript modules run in the sandbox's worker: the fedsilo binary.
const Sandbox* TestSandbox() {
  static const Sandbox* sandbox = new Sandbox{FEDSILO_TEST_BINARY};
  return sandbox;
}

ModelSpec ScriptSpec(const std::string& file = DigitsNetFile()) {
  ModelSpec s;
  s.config.kind = ModelKind::kTorchScript;
  s.config.torchscript = file;
  s.input_shape = {64};
  s.num_classes = 10;
  return s;
}

// Ten classes over 64 features: feature `label` is raised by 3.
std::shared_ptr<Dataset> TenClasses(int n, unsigned seed) {
  auto d = std::make_shared<Dataset>();
  d->example_shape = {64};
  d->num_classes = 10;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  for (int i = 0; i < n; ++i) {
    const int label = i % 10;
    for (int j = 0; j < 64; ++j) d->features.push_back(g(rng) + (j == label ? 3.0f : 0.0f));
    d->labels.push_back(label);
  }
  return d;
}

TEST(ModelTest, TorchScriptModuleTrainsWithItsBuffersAndSavesBack) {
  auto model = Model::Create(ScriptSpec(), 1, TestSandbox());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->num_parameters(), 64 * 32 + 32 + 32 + 32 + 32 * 10 + 10);
  EXPECT_THAT((*model)->Describe(), HasSubstr("torchscript"));
  const ModelState initial = (*model)->GetState();
  std::vector<std::string> names;
  for (const Tensor& t : initial.tensors()) names.push_back(t.name());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias",
                                             "fc2.weight", "fc2.bias", "bn1.running_mean",
                                             "bn1.running_var", "bn1.num_batches_tracked"}));
  // The file carries the initial weights: every silo starts from the same.
  auto again = Model::Create(ScriptSpec(), 99, TestSandbox());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(0, std::memcmp(initial.tensors()[0].data(), (*again)->GetState().tensors()[0].data(),
                           initial.tensors()[0].num_bytes()));

  auto train = TenClasses(500, 1), test = TenClasses(300, 2);
  auto before = (*model)->Evaluate(DataView::All(test));
  ASSERT_TRUE(before.ok()) << before.status();
  auto stats = (*model)->Train(DataView::All(train), Sgd(3), 7);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->steps, 3 * ((500 + 15) / 16));
  auto after = (*model)->Evaluate(DataView::All(test));
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->accuracy, 0.7);  // chance is 0.1
  EXPECT_GT(after->accuracy, before->accuracy + 0.3);
  EXPECT_LT(after->loss, before->loss);
  const ModelState trained = (*model)->GetState();
  const Tensor* steps = trained.Find("bn1.num_batches_tracked");
  ASSERT_NE(steps, nullptr);
  EXPECT_EQ(steps->floats()[0], static_cast<float>(stats->steps));  // buffers are trained too

  // Saved back as TorchScript, it loads with the trained weights.
  const std::string saved = ::testing::TempDir() + "/model_test_trained.pt";
  ASSERT_TRUE((*model)->SaveTorchScript(saved).ok());
  auto loaded = Model::Create(ScriptSpec(saved), 1, TestSandbox());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ModelState back = (*loaded)->GetState();
  ASSERT_EQ(back.size(), trained.size());
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(back.tensors()[i].data(), trained.tensors()[i].data(),
                             back.tensors()[i].num_bytes()))
        << back.tensors()[i].name();
  }
  EXPECT_DOUBLE_EQ((*loaded)->Evaluate(DataView::All(test))->accuracy, after->accuracy);
  // Exported into the original module file, the state comes out the same.
  const std::string exported = ::testing::TempDir() + "/model_test_exported.pt";
  ASSERT_TRUE(Model::ExportTorchScript(DigitsNetFile(), trained, exported, TestSandbox()).ok());
  auto reread = Model::Create(ScriptSpec(exported), 1, TestSandbox());
  ASSERT_TRUE(reread.ok()) << reread.status();
  const ModelState exported_state = (*reread)->GetState();
  for (size_t i = 0; i < exported_state.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(exported_state.tensors()[i].data(), trained.tensors()[i].data(),
                             trained.tensors()[i].num_bytes()));
  }
  Status misfit = Model::ExportTorchScript(DigitsNetFile(),
                                           (*Model::Create(Spec(ModelKind::kMlp), 1))->GetState(),
                                           exported, TestSandbox());
  EXPECT_EQ(misfit.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(misfit.message(), HasSubstr("digits_net.pt"));

  // And a model set to another's state is that model.
  ASSERT_TRUE((*again)->SetState(trained).ok());
  EXPECT_DOUBLE_EQ((*again)->Evaluate(DataView::All(test))->accuracy, after->accuracy);
}

// A module from torch.jit.trace (tests/fixtures/traced_digits_net.pt, written
// by examples/torchscript/make_model.py --trace) trains as a scripted one does.
TEST(ModelTest, TracedTorchScriptModuleTrainsToo) {
  const std::string file =
      std::string(FEDSILO_TEST_SOURCE_DIR) + "/tests/fixtures/traced_digits_net.pt";
  auto model = Model::Create(ScriptSpec(file), 1, TestSandbox());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->num_parameters(), 64 * 32 + 32 + 32 * 10 + 10);
  const ModelState initial = (*model)->GetState();
  std::vector<std::string> names;
  for (const Tensor& t : initial.tensors()) names.push_back(t.name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  auto train = TenClasses(500, 1), test = TenClasses(300, 2);
  auto before = (*model)->Evaluate(DataView::All(test));
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE((*model)->Train(DataView::All(train), Sgd(3), 7).ok());
  auto after = (*model)->Evaluate(DataView::All(test));
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->accuracy, 0.7);  // chance is 0.1
  EXPECT_GT(after->accuracy, before->accuracy + 0.3);
}

TEST(ModelTest, TorchScriptThatDoesNotFitIsAClearError) {
  ModelSpec three = ScriptSpec();
  three.num_classes = 3;
  auto wrong_classes = Model::Create(three, 1, TestSandbox());
  ASSERT_FALSE(wrong_classes.ok());
  EXPECT_EQ(wrong_classes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_classes.status().message(), HasSubstr("digits_net.pt"));
  EXPECT_THAT(wrong_classes.status().message(),
              HasSubstr("returned shape [2, 10]; it must return logits of shape [batch, 3]"));

  ModelSpec narrow = ScriptSpec();
  narrow.input_shape = {10};
  auto wrong_input = Model::Create(narrow, 1, TestSandbox());
  ASSERT_FALSE(wrong_input.ok());
  EXPECT_THAT(wrong_input.status().message(),
              HasSubstr("forward() fails on a batch of shape [2, 10]"));

  auto not_script = Model::Create(
      ScriptSpec(std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/digits.yaml"), 1, TestSandbox());
  ASSERT_FALSE(not_script.ok());
  EXPECT_THAT(not_script.status().message(), HasSubstr("examples/digits.yaml: not a TorchScript"));
  // Without a sandbox, no module is loaded in this process.
  auto unsandboxed = Model::Create(ScriptSpec(), 1);
  ASSERT_FALSE(unsandboxed.ok());
  EXPECT_THAT(unsandboxed.status().message(), HasSubstr("run only in a sandbox process"));

  auto model = Model::Create(ScriptSpec(), 1, TestSandbox());
  ASSERT_TRUE(model.ok());
  DpSgdOptions dp{1.0, 1.0, nullptr};
  auto refused = (*model)->Train(DataView::All(TenClasses(50, 1)), Sgd(1), 1, &dp);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("does not support model.torchscript"));

  auto builtin = Model::Create(Spec(ModelKind::kMlp), 1);
  EXPECT_EQ((*builtin)->SaveTorchScript(::testing::TempDir() + "/x.pt").code(),
            absl::StatusCode::kInvalidArgument);
}

// Parameters are aggregated and noised as float32: a module holding another
// dtype is refused, naming the parameter, rather than trained on a copy.
TEST(ModelTest, TorchScriptParametersMustBeFloat32) {
  const std::string path = ::testing::TempDir() + "/model_test_float64.pt";
  {
    torch::jit::Module m("__torch__.Float64");
    m.register_attribute("training", c10::BoolType::get(), true);
    m.register_parameter("w", torch::zeros({64, 10}, torch::kFloat32).requires_grad_(), false);
    m.register_parameter("scale", torch::ones({1}, torch::kFloat64).requires_grad_(), false);
    m.define("def forward(self, x):\n    return torch.matmul(x, self.w)\n");
    m.save(path);
  }
  auto refused = Model::Create(ScriptSpec(path), 1, TestSandbox());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("parameter 'scale' is Double"));
  EXPECT_THAT(refused.status().message(), HasSubstr("fedsilo trains float32 parameters"));
  // The same module with a float32 `scale` is accepted.
  {
    torch::jit::Module m("__torch__.Float32");
    m.register_attribute("training", c10::BoolType::get(), true);
    m.register_parameter("w", torch::zeros({64, 10}, torch::kFloat32).requires_grad_(), false);
    m.register_parameter("scale", torch::ones({1}, torch::kFloat32).requires_grad_(), false);
    m.define("def forward(self, x):\n    return torch.matmul(x, self.w)\n");
    m.save(path);
  }
  auto accepted = Model::Create(ScriptSpec(path), 1, TestSandbox());
  EXPECT_TRUE(accepted.ok()) << accepted.status();
}

}  // namespace
}  // namespace fedsilo::ml
