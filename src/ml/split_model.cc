#include "ml/split_model.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/mutex.h"
#include "ml/torch_threads.h"

namespace fedsilo::ml {
namespace {

torch::Tensor FromFloats(absl::Span<const float> values, int64_t rows, int64_t columns) {
  return torch::from_blob(const_cast<float*>(values.data()), {rows, columns}, torch::kFloat32)
      .clone();
}

std::vector<float> ToFloats(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

class StackImpl : public torch::nn::Module {
 public:
  explicit StackImpl(const LayerStack::Options& o) : relu_output_(o.relu_output) {
    int64_t in = o.inputs;
    std::vector<int64_t> widths(o.hidden.begin(), o.hidden.end());
    widths.push_back(o.outputs);
    for (size_t i = 0; i < widths.size(); ++i) {
      layers_.push_back(
          register_module(absl::StrCat("fc", i + 1), torch::nn::Linear(in, widths[i])));
      in = widths[i];
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i]->forward(x);
      if (i + 1 < layers_.size() || relu_output_) x = torch::relu(x);
    }
    return x;
  }

 private:
  bool relu_output_;
  std::vector<torch::nn::Linear> layers_;
};
TORCH_MODULE(Stack);

}  // namespace

struct LayerStack::Impl {
  Options options;
  Stack net{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  torch::Tensor input, output;  // of the last training pass
};

LayerStack::LayerStack(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LayerStack::~LayerStack() = default;

StatusOr<std::unique_ptr<LayerStack>> LayerStack::Create(const Options& options,
                                                         const TrainingConfig& training,
                                                         uint64_t seed) {
  if (options.inputs < 1 || options.outputs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("a layer stack needs inputs and outputs; got ",
                                                   options.inputs, " and ", options.outputs));
  }
  UseOneThreadHere();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  try {
    {
      // Initialisation draws from libtorch's global generator.
      static Mutex init_mu;
      MutexLock lock(&init_mu);
      torch::manual_seed(seed);
      impl->net = Stack(options);
    }
    if (training.optimizer == OptimizerKind::kAdam) {
      impl->optimizer = std::make_unique<torch::optim::Adam>(
          impl->net->parameters(),
          torch::optim::AdamOptions(training.learning_rate).weight_decay(training.weight_decay));
    } else {
      impl->optimizer = std::make_unique<torch::optim::SGD>(
          impl->net->parameters(), torch::optim::SGDOptions(training.learning_rate)
                                       .momentum(training.momentum)
                                       .weight_decay(training.weight_decay));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: cannot make the model: ", e.what()));
  }
  return std::unique_ptr<LayerStack>(new LayerStack(std::move(impl)));
}

StatusOr<std::vector<float>> LayerStack::Forward(absl::Span<const float> x, int64_t rows,
                                                 bool train) {
  const int64_t in = impl_->options.inputs;
  if (rows < 1 || x.size() != static_cast<size_t>(rows * in)) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", rows, " rows of ", in, " values (",
                                                   rows * in, "), got ", x.size()));
  }
  UseOneThreadHere();
  try {
    torch::Tensor input = FromFloats(x, rows, in);
    impl_->net->train(train);
    if (!train) {
      torch::NoGradGuard no_grad;
      torch::Tensor out = impl_->net->forward(input);
      if (!torch::isfinite(out).all().item<bool>()) {
        return absl::InternalError("the model's output is not finite");
      }
      return ToFloats(out);
    }
    if (impl_->options.input_gradient) input.requires_grad_(true);
    torch::Tensor out = impl_->net->forward(input);
    if (!torch::isfinite(out).all().item<bool>()) {
      return absl::InternalError("the model's output is not finite");
    }
    impl_->input = input;
    impl_->output = out;
    return ToFloats(out);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
}

StatusOr<std::vector<float>> LayerStack::Backward(absl::Span<const float> output_gradient) {
  if (!impl_->output.defined()) {
    return absl::FailedPreconditionError("no training pass to go back through");
  }
  const int64_t rows = impl_->output.size(0), outs = impl_->options.outputs;
  if (output_gradient.size() != static_cast<size_t>(rows * outs)) {
    return absl::InvalidArgumentError(absl::StrCat("expected a gradient of ", rows, " rows of ",
                                                   outs, " values, got ", output_gradient.size(),
                                                   " values"));
  }
  UseOneThreadHere();
  try {
    impl_->optimizer->zero_grad();
    impl_->output.backward(FromFloats(output_gradient, rows, outs));
    impl_->optimizer->step();
    std::vector<float> input_gradient;
    if (impl_->options.input_gradient) input_gradient = ToFloats(impl_->input.grad());
    impl_->input = torch::Tensor();
    impl_->output = torch::Tensor();
    return input_gradient;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
}

Status LayerStack::SetLearningRate(double learning_rate) {
  try {
    for (auto& group : impl_->optimizer->param_groups()) group.options().set_lr(learning_rate);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
  return absl::OkStatus();
}

ModelState LayerStack::GetState() const {
  ModelState state;
  torch::NoGradGuard no_grad;
  for (const auto& p : impl_->net->named_parameters()) {
    const torch::Tensor c = p.value().detach().contiguous();
    std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
    (void)state.Add(Tensor::FromFloats(
        p.key(), shape, absl::MakeConstSpan(c.data_ptr<float>(), static_cast<size_t>(c.numel()))));
  }
  return state;
}

Status LayerStack::SetState(const ModelState& state) {
  FEDSILO_RETURN_IF_ERROR(Annotate(state.CheckSameLayout(GetState()), "model state"));
  torch::NoGradGuard no_grad;
  size_t i = 0;
  try {
    for (auto& p : impl_->net->named_parameters()) {
      const Tensor& src = state.tensors()[i++];
      p.value().copy_(torch::from_blob(const_cast<float*>(src.floats().data()), p.value().sizes(),
                                       torch::kFloat32));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
  return absl::OkStatus();
}

int64_t LayerStack::inputs() const { return impl_->options.inputs; }
int64_t LayerStack::outputs() const { return impl_->options.outputs; }

int64_t LayerStack::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : impl_->net->parameters()) n += p.numel();
  return n;
}

std::string LayerStack::Describe() const {
  const Options& o = impl_->options;
  std::vector<int64_t> widths = {o.inputs};
  widths.insert(widths.end(), o.hidden.begin(), o.hidden.end());
  widths.push_back(o.outputs);
  return absl::StrCat(o.hidden.empty() ? "linear " : "mlp ", absl::StrJoin(widths, "-"), ", ",
                      num_parameters(), " parameters");
}

StatusOr<CrossEntropy> CrossEntropyOf(absl::Span<const float> logits, int64_t rows, int classes,
                                      absl::Span<const int64_t> labels) {
  if (rows < 1 || classes < 2 || logits.size() != static_cast<size_t>(rows * classes) ||
      labels.size() != static_cast<size_t>(rows)) {
    return absl::InvalidArgumentError(absl::StrCat("cross-entropy of ", logits.size(),
                                                   " logits and ", labels.size(), " labels for ",
                                                   rows, " rows of ", classes, " classes"));
  }
  for (int64_t l : labels) {
    if (l < 0 || l >= classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("a label is not one of the ", classes, " classes"));
    }
  }
  UseOneThreadHere();
  try {
    torch::Tensor z = FromFloats(logits, rows, classes).requires_grad_(true);
    torch::Tensor y =
        torch::from_blob(const_cast<int64_t*>(labels.data()), {rows}, torch::kInt64).clone();
    torch::Tensor log_p = torch::log_softmax(z, 1);
    torch::Tensor loss = torch::nll_loss(log_p, y);
    loss.backward();
    CrossEntropy out;
    out.loss = loss.item<double>();
    out.gradient = ToFloats(z.grad());
    out.log_probabilities = ToFloats(log_p);
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
}

StatusOr<std::vector<float>> LogProbabilitiesOf(absl::Span<const float> logits, int64_t rows,
                                                int classes) {
  if (rows < 1 || classes < 2 || logits.size() != static_cast<size_t>(rows * classes)) {
    return absl::InvalidArgumentError(absl::StrCat("log-probabilities of ", logits.size(),
                                                   " logits for ", rows, " rows of ", classes,
                                                   " classes"));
  }
  UseOneThreadHere();
  try {
    return ToFloats(torch::log_softmax(FromFloats(logits, rows, classes), 1));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
}

}  // namespace fedsilo::ml
