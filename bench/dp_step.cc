#include "dp_step.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "ml/model.h"

namespace fedsilo::bench {
namespace {

// Random MNIST-shaped examples: the step time does not depend on the values.
std::shared_ptr<ml::Dataset> FakeMnist(int n) {
  auto d = std::make_shared<ml::Dataset>();
  d->example_shape = {1, 28, 28};
  d->num_classes = 10;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  d->features.resize(static_cast<size_t>(n) * 784);
  for (float& f : d->features) f = u(rng);
  for (int i = 0; i < n; ++i) d->labels.push_back(i % 10);
  return d;
}

// Seconds per step: `steps` steps as one epoch over steps x batch examples.
double SecondsPerStep(ModelKind kind, const DpStepOptions& o, bool dp) {
  ml::ModelSpec spec;
  spec.config.kind = kind;
  spec.config.hidden = {200, 200};
  spec.input_shape = {1, 28, 28};
  spec.num_classes = 10;
  auto model = ml::Model::Create(spec, 1);
  auto data = FakeMnist(o.steps * o.batch_size);
  TrainingConfig t;
  t.batch_size = o.batch_size;
  t.local_epochs = 1;
  t.learning_rate = 0.01;
  ml::DpSgdOptions options{1.0, 1.0, nullptr};  // noise from the OS-keyed CSPRNG, as silos draw it
  // One untimed step warms up allocations.
  (void)(*model)->Train(ml::DataView::All(FakeMnist(o.batch_size)), t, 1, dp ? &options : nullptr);
  const auto start = std::chrono::steady_clock::now();
  auto stats = (*model)->Train(ml::DataView::All(data), t, 1, dp ? &options : nullptr);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats.ok() && stats->steps > 0 ? seconds / static_cast<double>(stats->steps) : -1;
}

}  // namespace

int RunDpStep(const DpStepOptions& o) {
  std::printf("dp-step: batch %d, %d steps per measurement, one thread\n", o.batch_size, o.steps);
  nlohmann::json out = {{"benchmark", "dp-step"}, {"batch_size", o.batch_size}};
  for (auto [kind, name] : {std::pair{ModelKind::kMlp, "2nn"}, {ModelKind::kCnn, "cnn"}}) {
    const double plain = SecondsPerStep(kind, o, false);
    const double dp = SecondsPerStep(kind, o, true);
    if (plain <= 0 || dp <= 0) return 1;
    std::printf("  %-4s  SGD %7.2f ms   DP-SGD %7.2f ms   ratio %.2f\n", name, plain * 1e3,
                dp * 1e3, dp / plain);
    out[std::string(name) + "_sgd_ms"] = plain * 1e3;
    out[std::string(name) + "_dp_ms"] = dp * 1e3;
    out[std::string(name) + "_ratio"] = dp / plain;
  }
  if (o.json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace fedsilo::bench
