#include "ml/split_model.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/mutex.h"
#include "ml/torch_threads.h"
#include "ml/torchscript_check.h"
#include "privacy/secure_random.h"

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
  // A TorchScript submodule (in a sandbox's worker) in place of `net`.
  torch::jit::Module script;
  bool scripted = false;
  std::string submodule;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  torch::Tensor input, output;  // of the last training pass

  std::vector<torch::Tensor> Parameters() const {
    if (!scripted) return net->parameters();
    std::vector<torch::Tensor> out;
    for (const auto& p : script.parameters()) out.push_back(p);
    return out;
  }
  // Parameters, then buffers (a built-in stack has none), by name.
  std::vector<std::pair<std::string, torch::Tensor>> NamedWeights() const {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    if (!scripted) {
      for (const auto& p : net->named_parameters()) out.emplace_back(p.key(), p.value());
      return out;
    }
    for (const auto& p : script.named_parameters()) out.emplace_back(p.name, p.value);
    // Floating-point buffers (batch norm's running statistics); a counter
    // (num_batches_tracked) stays in the module.
    for (const auto& b : script.named_buffers()) {
      if (b.value.is_floating_point()) out.emplace_back(b.name, b.value);
    }
    return out;
  }
  torch::Tensor Run(const torch::Tensor& x) {
    if (!scripted) return net->forward(x);
    c10::IValue out = script.forward({x});
    if (!out.isTensor()) throw std::runtime_error("forward() did not return a tensor");
    return out.toTensor();
  }
  void Train(bool on) {
    if (scripted) {
      script.train(on);
    } else {
      net->train(on);
    }
  }
};

namespace {

// Initialisation draws from libtorch's global generator.
Mutex& InitMutex() {
  static Mutex mu;
  return mu;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

std::string ScriptedMisfitMessage(const ScriptedMisfit& misfit, const std::string& submodule,
                                  int64_t inputs, int64_t outputs) {
  const std::string what = absl::StrCat("submodule '", submodule,
                                        "' of the job's TorchScript module (model.torchscript)");
  const std::string needs = absl::StrCat("; a party's bottom model maps its ", inputs,
                                         " columns to the cut layer: [batch, ", inputs,
                                         "] -> [batch, ", outputs, "] (vertical.cut_width)");
  switch (misfit.problem) {
    case ScriptedMisfit::kFits:
      return what;
    case ScriptedMisfit::kNoSubmodule:
      return absl::StrCat(
          "the job's TorchScript module (model.torchscript) has no submodule '", submodule,
          "': a vertical job's module holds one bottom model per party, named after it");
    case ScriptedMisfit::kForwardFails:
      return absl::StrCat(what, ": its forward() fails on a batch of shape [2, ", inputs, "]",
                          needs);
    case ScriptedMisfit::kWrongShape:
      return absl::StrCat(what, ": its forward() of a batch of shape [2, ", inputs, "] returned ",
                          misfit.output_shape.empty() ? std::string("something other than a tensor")
                                                      : ShapeText(misfit.output_shape),
                          needs);
    case ScriptedMisfit::kNotFloat32:
      return absl::StrCat(what, ": a parameter is not float32; fedsilo trains float32 parameters");
    case ScriptedMisfit::kNoParameters:
      return absl::StrCat(what, ": it has no parameters to train");
  }
  return what;
}

LayerStack::LayerStack(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LayerStack::~LayerStack() = default;

Status LayerStack::MakeOptimizer(const TrainingConfig& training) {
  try {
    if (training.optimizer == OptimizerKind::kAdam) {
      impl_->optimizer = std::make_unique<torch::optim::Adam>(
          impl_->Parameters(),
          torch::optim::AdamOptions(training.learning_rate).weight_decay(training.weight_decay));
    } else {
      impl_->optimizer = std::make_unique<torch::optim::SGD>(
          impl_->Parameters(), torch::optim::SGDOptions(training.learning_rate)
                                   .momentum(training.momentum)
                                   .weight_decay(training.weight_decay));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: cannot make the optimizer: ", e.what()));
  }
  return absl::OkStatus();
}

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
    MutexLock lock(&InitMutex());
    torch::manual_seed(seed);
    impl->net = Stack(options);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: cannot make the model: ", e.what()));
  }
  auto stack = std::unique_ptr<LayerStack>(new LayerStack(std::move(impl)));
  FEDSILO_RETURN_IF_ERROR(stack->MakeOptimizer(training));
  return stack;
}

StatusOr<std::unique_ptr<LayerStack>> LayerStack::LoadTorchScriptHere(
    const std::string& module_bytes, const std::string& submodule, const Options& options,
    const TrainingConfig& training, bool check_ops, std::vector<RefusedOp>* refused,
    ScriptedMisfit* misfit) {
  *misfit = ScriptedMisfit();
  if (options.inputs < 1 || options.outputs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("a bottom model needs inputs and outputs; got ",
                                                   options.inputs, " and ", options.outputs));
  }
  UseOneThreadHere();
  torch::jit::Module module;
  try {
    std::istringstream in(module_bytes);
    module = torch::jit::load(in);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return absl::InvalidArgumentError(
        absl::StrCat("not a TorchScript module (torch.jit.script, then .save()): ",
                     what.substr(0, what.find('\n'))));
  }
  if (check_ops) {
    *refused = FindRefusedOps(module);
    if (!refused->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("refused: ", RefusedOpMessage(refused->front())));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->scripted = true;
  impl->submodule = submodule;
  const auto misfits = [&](ScriptedMisfit::Problem problem) {
    misfit->problem = problem;
    return absl::InvalidArgumentError(
        ScriptedMisfitMessage(*misfit, submodule, options.inputs, options.outputs));
  };
  bool found = false;
  try {
    for (const auto& child : module.named_children()) {
      if (child.name != submodule) continue;
      impl->script = child.value;
      found = true;
    }
  } catch (const std::exception&) {
    found = false;
  }
  if (!found) return misfits(ScriptedMisfit::kNoSubmodule);
  const std::vector<torch::Tensor> parameters = impl->Parameters();
  if (parameters.empty()) return misfits(ScriptedMisfit::kNoParameters);
  for (const torch::Tensor& p : parameters) {
    if (p.scalar_type() != torch::kFloat32) return misfits(ScriptedMisfit::kNotFloat32);
  }
  try {
    for (torch::Tensor p : parameters) p.requires_grad_(true);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
  torch::Tensor out;
  try {
    torch::NoGradGuard no_grad;
    impl->Train(false);
    c10::IValue value = impl->script.forward({torch::zeros({2, options.inputs}, torch::kFloat32)});
    if (!value.isTensor()) return misfits(ScriptedMisfit::kWrongShape);
    out = value.toTensor();
  } catch (const std::exception&) {
    return misfits(ScriptedMisfit::kForwardFails);
  }
  if (out.dim() != 2 || out.size(0) != 2 || out.size(1) != options.outputs ||
      out.scalar_type() != torch::kFloat32) {
    misfit->output_shape.assign(out.sizes().begin(), out.sizes().end());
    return misfits(ScriptedMisfit::kWrongShape);
  }
  auto stack = std::unique_ptr<LayerStack>(new LayerStack(std::move(impl)));
  FEDSILO_RETURN_IF_ERROR(stack->MakeOptimizer(training));
  return stack;
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
    impl_->Train(train);
    if (!train) {
      torch::NoGradGuard no_grad;
      torch::Tensor out = impl_->Run(input);
      if (!torch::isfinite(out).all().item<bool>()) {
        return absl::InternalError("the model's output is not finite");
      }
      return ToFloats(out);
    }
    if (impl_->options.input_gradient) input.requires_grad_(true);
    torch::Tensor out = impl_->Run(input);
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
  for (const auto& [name, t] : impl_->NamedWeights()) {
    const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
    std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
    (void)state.Add(Tensor::FromFloats(
        name, shape, absl::MakeConstSpan(c.data_ptr<float>(), static_cast<size_t>(c.numel()))));
  }
  return state;
}

Status LayerStack::SetState(const ModelState& state) {
  FEDSILO_RETURN_IF_ERROR(Annotate(state.CheckSameLayout(GetState()), "model state"));
  torch::NoGradGuard no_grad;
  size_t i = 0;
  try {
    for (auto& [name, t] : impl_->NamedWeights()) {
      const Tensor& src = state.tensors()[i++];
      t.copy_(
          torch::from_blob(const_cast<float*>(src.floats().data()), t.sizes(), torch::kFloat32));
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
  for (const auto& p : impl_->Parameters()) n += p.numel();
  return n;
}

std::string LayerStack::Describe() const {
  const Options& o = impl_->options;
  if (impl_->scripted) {
    return absl::StrCat("torchscript '", impl_->submodule, "' ", o.inputs, "->", o.outputs, ", ",
                        num_parameters(), " parameters");
  }
  std::vector<int64_t> widths = {o.inputs};
  widths.insert(widths.end(), o.hidden.begin(), o.hidden.end());
  widths.push_back(o.outputs);
  return absl::StrCat(o.hidden.empty() ? "linear " : "mlp ", absl::StrJoin(widths, "-"), ", ",
                      num_parameters(), " parameters");
}

Status DrawInitialWeights(SplitLayers& layers, privacy::SecureRandom& random) {
  FEDSILO_ASSIGN_OR_RETURN(ModelState state, layers.Weights());
  const auto prefix_of = [](const std::string& name) {
    const size_t dot = name.rfind('.');
    return dot == std::string::npos ? std::string() : name.substr(0, dot + 1);
  };
  const auto leaf_of = [](const std::string& name) {
    const size_t dot = name.rfind('.');
    return dot == std::string::npos ? name : name.substr(dot + 1);
  };
  const auto fill = [&](const Tensor& t, double bound) -> Tensor {
    std::vector<float> values(t.floats().size());
    for (float& v : values) v = static_cast<float>((2 * random.Uniform() - 1) * bound);
    return Tensor::FromFloats(t.name(), t.shape(), values);
  };
  // Kaiming-uniform's bound for a weight of this shape: 1/sqrt(fan_in).
  const auto bound_for = [](const Tensor& t) {
    int64_t fan_in = 1;
    for (size_t d = 1; d < t.shape().size(); ++d) fan_in *= t.shape()[d];
    return 1 / std::sqrt(static_cast<double>(std::max<int64_t>(1, fan_in)));
  };
  std::map<std::string, double> bound_of;  // by the weight's prefix ("fc1." of "fc1.weight")
  for (const Tensor& t : state.tensors()) {
    if (t.shape().size() >= 2) bound_of[prefix_of(t.name())] = bound_for(t);
  }
  ModelState drawn;
  for (const Tensor& t : state.tensors()) {
    auto it = bound_of.find(prefix_of(t.name()));
    if (t.shape().size() >= 2) {
      FEDSILO_RETURN_IF_ERROR(drawn.Add(fill(t, bound_for(t))));
    } else if (t.shape().size() == 1 && leaf_of(t.name()) == "bias" && it != bound_of.end()) {
      FEDSILO_RETURN_IF_ERROR(drawn.Add(fill(t, it->second)));
    } else {
      FEDSILO_RETURN_IF_ERROR(drawn.Add(t));
    }
  }
  return layers.SetState(drawn);
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
