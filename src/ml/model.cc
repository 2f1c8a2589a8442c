// The only place (with torch_state.cc) that includes libtorch.
#include "ml/model.h"

#include <dlfcn.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/mutex.h"
#include "ml/sandbox.h"
#include "ml/torch_threads.h"
#include "ml/torchscript_check.h"
#include "privacy/secure_random.h"

namespace fedsilo::ml {
namespace {

class NetImpl : public torch::nn::Module {
 public:
  explicit NetImpl(const ModelSpec& spec) : kind_(spec.config.kind) {
    if (kind_ == ModelKind::kCnn) {
      const int64_t c = spec.input_shape[0], h = spec.input_shape[1], w = spec.input_shape[2];
      conv1_ = register_module("conv1",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(c, 32, 5).padding(2)));
      conv2_ = register_module("conv2",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)));
      const int64_t flat = 64 * (h / 2 / 2) * (w / 2 / 2);
      linears_.push_back(register_module("fc1", torch::nn::Linear(flat, 512)));
      linears_.push_back(register_module("fc2", torch::nn::Linear(512, spec.num_classes)));
      return;
    }
    int64_t in = std::accumulate(spec.input_shape.begin(), spec.input_shape.end(), int64_t{1},
                                 std::multiplies<int64_t>());
    std::vector<int64_t> widths;
    if (kind_ == ModelKind::kMlp)
      widths.assign(spec.config.hidden.begin(), spec.config.hidden.end());
    widths.push_back(spec.num_classes);
    for (size_t i = 0; i < widths.size(); ++i) {
      linears_.push_back(
          register_module(absl::StrCat("fc", i + 1), torch::nn::Linear(in, widths[i])));
      in = widths[i];
    }
  }

  // A layer with parameters as DP-SGD sees it in a traced forward pass.
  struct Trace {
    torch::nn::Linear linear{nullptr};
    torch::nn::Conv2d conv{nullptr};
    torch::Tensor input;   // what the layer received
    torch::Tensor output;  // what it produced, before the activation
  };

  // The layers with parameters, in forward order (no input or output).
  std::vector<Trace> ParameterLayers() const {
    std::vector<Trace> layers;
    if (kind_ == ModelKind::kCnn) {
      for (const torch::nn::Conv2d& conv : {conv1_, conv2_}) {
        Trace t;
        t.conv = conv;
        layers.push_back(t);
      }
    }
    for (const torch::nn::Linear& linear : linears_) {
      Trace t;
      t.linear = linear;
      layers.push_back(t);
    }
    return layers;
  }

  // forward(), recording each layer's input and output.
  torch::Tensor forward_traced(torch::Tensor x, std::vector<Trace>* traces) {
    traces->clear();
    if (kind_ == ModelKind::kCnn) {
      for (torch::nn::Conv2d& conv : {std::ref(conv1_), std::ref(conv2_)}) {
        Trace t;
        t.conv = conv;
        t.input = x;
        t.output = conv->forward(x);
        traces->push_back(t);
        x = torch::max_pool2d(torch::relu(t.output), 2);
      }
    }
    x = x.flatten(1);
    for (size_t i = 0; i < linears_.size(); ++i) {
      Trace t;
      t.linear = linears_[i];
      t.input = x;
      t.output = linears_[i]->forward(x);
      traces->push_back(t);
      x = t.output;
      if (i + 1 < linears_.size()) x = torch::relu(x);
    }
    return x;
  }

  torch::Tensor forward(torch::Tensor x) {
    if (kind_ == ModelKind::kCnn) {
      x = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
      x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);
    }
    x = x.flatten(1);
    for (size_t i = 0; i < linears_.size(); ++i) {
      x = linears_[i]->forward(x);
      if (i + 1 < linears_.size()) x = torch::relu(x);
    }
    return x;
  }

 private:
  ModelKind kind_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  std::vector<torch::nn::Linear> linears_;
};
TORCH_MODULE(Net);

// Copies the examples at `indices[begin, end)` into a batch tensor.
std::pair<torch::Tensor, torch::Tensor> MakeBatch(const DataView& data,
                                                  const std::vector<int64_t>& order, size_t begin,
                                                  size_t end) {
  const Dataset& d = *data.dataset;
  const int64_t f = d.feature_size();
  const int64_t b = static_cast<int64_t>(end - begin);
  std::vector<int64_t> shape = {b};
  shape.insert(shape.end(), d.example_shape.begin(), d.example_shape.end());
  torch::Tensor x = torch::empty(shape, torch::kFloat32);
  torch::Tensor y = torch::empty({b}, torch::kInt64);
  float* xp = x.data_ptr<float>();
  int64_t* yp = y.data_ptr<int64_t>();
  for (size_t i = begin; i < end; ++i) {
    const int64_t idx = data.indices[static_cast<size_t>(order[i])];
    d.CopyExample(idx, xp + (i - begin) * f);
    yp[i - begin] = d.labels[static_cast<size_t>(idx)];
  }
  return {x, y};
}

// Per-example gradients of every traced layer, from the layers' inputs and
// the loss's gradients with respect to their outputs (one backward pass).
struct PerExample {
  std::vector<torch::Tensor> weight;  // [B, ...weight shape] for conv; unused for linear
  std::vector<torch::Tensor> bias;    // [B, out]
  torch::Tensor norm2;                // [B]: squared norm over all parameters
};

PerExample PerExampleGradients(const std::vector<NetImpl::Trace>& traces,
                               const std::vector<torch::Tensor>& grads) {
  PerExample pe;
  const int64_t b = grads.front().size(0);
  pe.norm2 = torch::zeros({b}, torch::kFloat32);
  for (size_t l = 0; l < traces.size(); ++l) {
    const NetImpl::Trace& t = traces[l];
    if (t.linear) {
      // grad W_i = g_i a_i^T, so |grad W_i|^2 = |g_i|^2 |a_i|^2; grad b_i = g_i.
      const torch::Tensor& g = grads[l];
      pe.norm2 += g.pow(2).sum(1) * (t.input.pow(2).sum(1) + 1);
      pe.weight.push_back(torch::Tensor());
      pe.bias.push_back(g);
    } else {
      const auto& o = t.conv->options;
      torch::Tensor u = torch::nn::functional::unfold(
          t.input, torch::nn::functional::UnfoldFuncOptions(o.kernel_size())
                       .padding(c10::get<torch::ExpandingArray<2>>(o.padding()))
                       .stride(o.stride())
                       .dilation(o.dilation()));           // [B, Cin k k, L]
      torch::Tensor g = grads[l].flatten(2);               // [B, Cout, L]
      torch::Tensor w = torch::bmm(g, u.transpose(1, 2));  // [B, Cout, Cin k k]
      torch::Tensor bias = g.sum(2);                       // [B, Cout]
      pe.norm2 += w.pow(2).sum({1, 2}) + bias.pow(2).sum(1);
      pe.weight.push_back(w);
      pe.bias.push_back(bias);
    }
  }
  return pe;
}

// One traced forward pass over a batch and the summed loss's gradients with
// respect to each layer's output: what per-example gradients are made from.
struct TracedPass {
  std::vector<NetImpl::Trace> traces;
  torch::Tensor logits;
  torch::Tensor loss;                // summed over the batch
  std::vector<torch::Tensor> grads;  // one per trace
};

TracedPass TracedBackward(NetImpl& net, const torch::Tensor& x, const torch::Tensor& y) {
  TracedPass pass;
  pass.logits = net.forward_traced(x, &pass.traces);
  pass.loss = torch::nn::functional::cross_entropy(
      pass.logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  std::vector<torch::Tensor> outputs;
  for (const NetImpl::Trace& t : pass.traces) outputs.push_back(t.output);
  pass.grads = torch::autograd::grad({pass.loss}, outputs);
  return pass;
}

}  // namespace

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct Model::Impl {
  ModelSpec spec;
  Net net{nullptr};           // a built-in model
  torch::jit::Module script;  // model.torchscript, loaded here (a sandbox worker)
  bool scripted = false;
  ModelState layout;  // the initial state; only its names and shapes are used
  // model.torchscript in a sandbox: the worker holds the module; `state` is
  // its weights as last set or trained.
  std::unique_ptr<SandboxSession> remote;
  ModelState state;
  bool state_sent = true;  // false: `state` goes with the next call
  int64_t remote_parameters = 0;
  int64_t remote_buffers = 0;

  std::vector<torch::Tensor> Parameters() const {
    if (!scripted) return net->parameters();
    std::vector<torch::Tensor> out;
    for (const auto& p : script.parameters()) out.push_back(p);
    return out;
  }
  NamedTensors NamedParameters() const {
    NamedTensors out;
    if (scripted) {
      for (const auto& p : script.named_parameters()) out.emplace_back(p.name, p.value);
    } else {
      for (const auto& p : net->named_parameters()) out.emplace_back(p.key(), p.value());
    }
    return out;
  }
  NamedTensors NamedBuffers() const {
    NamedTensors out;
    if (scripted) {
      for (const auto& b : script.named_buffers()) out.emplace_back(b.name, b.value);
    } else {
      for (const auto& b : net->named_buffers()) out.emplace_back(b.key(), b.value());
    }
    return out;
  }
  // Logits for a batch. A scripted module must return one tensor.
  torch::Tensor Forward(const torch::Tensor& x) {
    if (!scripted) return net->forward(x);
    c10::IValue out = script.forward({x});
    if (!out.isTensor()) {
      throw std::runtime_error(
          absl::StrCat("forward() returned a ", out.tagKind(), ", not a tensor of logits"));
    }
    return out.toTensor();
  }
  // Loads a TorchScript module from its bytes.
  Status LoadModule(const std::string& bytes);
  // Checks that the loaded module maps a batch of the data's examples to
  // one logit per class. (Errors say what, not which file: the sandbox's
  // host names it.)
  Status CheckScript(const ModelSpec& spec);

  void SetTraining(bool on) {
    if (scripted) {
      script.train(on);
    } else {
      net->train(on);
    }
  }
};

namespace {

// The first line of a libtorch error (the rest is its backtrace).
std::string FirstLine(const std::exception& e) {
  const std::string what = e.what();
  return what.substr(0, what.find('\n'));
}

}  // namespace

Status Model::Impl::LoadModule(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    script = torch::jit::load(in);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a TorchScript module (torch.jit.script or torch.jit.trace, then "
                     ".save()): ",
                     FirstLine(e)));
  }
  scripted = true;
  return absl::OkStatus();
}

Status Model::Impl::CheckScript(const ModelSpec& spec) {
  std::vector<int64_t> shape = {2};
  shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
  torch::Tensor out;
  try {
    torch::NoGradGuard no_grad;
    SetTraining(false);
    out = Forward(torch::zeros(shape, torch::kFloat32));
    SetTraining(true);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("forward() fails on a batch of shape ",
                                                   ShapeToString(shape),
                                                   " (the data set's): ", FirstLine(e)));
  }
  if (out.dim() != 2 || out.size(0) != 2 || out.size(1) != spec.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward() of a batch of shape ", ShapeToString(shape), " returned shape ",
                     ShapeToString(std::vector<int64_t>(out.sizes().begin(), out.sizes().end())),
                     "; it must return logits of shape [batch, ", spec.num_classes,
                     "] (one per class of the data set)"));
  }
  for (const auto& p : NamedParameters()) {
    if (p.second.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", p.first, "' is ",
                                                     c10::toString(p.second.scalar_type()),
                                                     "; fedsilo trains float32 parameters"));
    }
  }
  return absl::OkStatus();
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

StatusOr<std::unique_ptr<Model>> Model::LoadTorchScriptHere(const std::string& module_bytes,
                                                            const ModelSpec& spec, bool check_ops,
                                                            std::vector<RefusedOp>* refused) {
  UseOneThreadHere();
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  FEDSILO_RETURN_IF_ERROR(impl->LoadModule(module_bytes));
  if (check_ops) {
    *refused = FindRefusedOps(impl->script);
    if (!refused->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("refused: ", RefusedOpMessage(refused->front())));
    }
  }
  if (!spec.input_shape.empty()) FEDSILO_RETURN_IF_ERROR(impl->CheckScript(spec));
  auto model = std::unique_ptr<Model>(new Model(std::move(impl)));
  model->impl_->layout = model->GetState();
  return model;
}

StatusOr<std::unique_ptr<Model>> Model::Create(const ModelSpec& spec, uint64_t seed,
                                               const Sandbox* sandbox) {
  if (spec.num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("model needs at least 2 classes, the data has ", spec.num_classes));
  }
  if (spec.config.kind == ModelKind::kCnn &&
      (spec.input_shape.size() != 3 || spec.input_shape[1] < 4 || spec.input_shape[2] < 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.name: cnn needs image data (channels x height x width, at least 4x4); the data "
        "set's examples have shape ",
        ShapeToString(spec.input_shape), "; use mlp or logistic"));
  }
  UseOneThreadHere();
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  if (spec.config.kind == ModelKind::kTorchScript) {
    // The file carries its initial weights: every silo starts from the same.
    const std::string where = absl::StrCat("model.torchscript ", spec.config.torchscript);
    if (sandbox == nullptr) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat(where, ": TorchScript modules run only in a sandbox process")));
    }
    // The user's own file, or a kept copy sealed at rest.
    FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFileOpeningSealed(spec.config.torchscript));
    FEDSILO_ASSIGN_OR_RETURN(impl->remote, SandboxSession::Start(*sandbox, where));
    FEDSILO_ASSIGN_OR_RETURN(SandboxSession::Loaded loaded,
                             impl->remote->Load(bytes, spec.input_shape, spec.num_classes));
    impl->scripted = true;
    impl->layout = loaded.state;
    impl->state = std::move(loaded.state);
    impl->remote_parameters = loaded.num_parameters;
    impl->remote_buffers = loaded.num_buffers;
    return std::unique_ptr<Model>(new Model(std::move(impl)));
  }
  {
    // Initialisation draws from libtorch's global generator.
    static Mutex init_mu;
    MutexLock lock(&init_mu);
    torch::manual_seed(seed);
    impl->net = Net(spec);
  }
  auto model = std::unique_ptr<Model>(new Model(std::move(impl)));
  model->impl_->layout = model->GetState();
  return model;
}

ModelState Model::GetState() const {
  if (impl_->remote != nullptr) return impl_->state;
  ModelState state;
  torch::NoGradGuard no_grad;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
    std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
    // Names are unique in a torch module, so Add cannot fail.
    (void)state.Add(Tensor::FromFloats(
        name, shape, absl::MakeConstSpan(c.data_ptr<float>(), static_cast<size_t>(c.numel()))));
  };
  for (const auto& [name, t] : impl_->NamedParameters()) add(name, t);
  for (const auto& [name, t] : impl_->NamedBuffers()) add(name, t);
  return state;
}

Status Model::SetState(const ModelState& state) {
  FEDSILO_RETURN_IF_ERROR(Annotate(state.CheckSameLayout(impl_->layout), "model state"));
  if (impl_->remote != nullptr) {
    // Sent with the next training or prediction: one exchange a round.
    impl_->state = state;
    impl_->state_sent = false;
    return absl::OkStatus();
  }
  torch::NoGradGuard no_grad;
  size_t i = 0;
  auto copy = [&](torch::Tensor t) {
    const Tensor& src = state.tensors()[i++];
    t.copy_(torch::from_blob(const_cast<float*>(src.floats().data()), t.sizes(), torch::kFloat32));
  };
  for (auto& p : impl_->NamedParameters()) copy(p.second);
  for (auto& b : impl_->NamedBuffers()) copy(b.second);
  return absl::OkStatus();
}

namespace {

// The parameters DP-SGD updates, in the traced layers' order (weight, bias);
// InvalidArgument naming a parameter that no supported layer owns.
StatusOr<std::vector<torch::Tensor>> DpParameters(NetImpl& net,
                                                  const std::vector<NetImpl::Trace>& traces) {
  std::vector<torch::Tensor> params;
  for (const NetImpl::Trace& t : traces) {
    params.push_back(t.linear ? t.linear->weight : t.conv->weight);
    params.push_back(t.linear ? t.linear->bias : t.conv->bias);
  }
  for (const auto& p : net.named_parameters()) {
    bool handled = false;
    for (const torch::Tensor& q : params) handled = handled || q.is_same(p.value());
    if (!handled) {
      return absl::InvalidArgumentError(
          absl::StrCat("DP-SGD cannot compute per-example gradients for parameter '", p.key(),
                       "' (supported layers: linear, conv2d)"));
    }
  }
  return params;
}

// The gradients of a LocalObjective's terms, added to each parameter's.
class ObjectiveTerms {
 public:
  ObjectiveTerms(const std::vector<torch::Tensor>& params, const LocalObjective& objective)
      : mu_(objective.proximal_mu), params_(params) {
    torch::NoGradGuard no_grad;
    if (mu_ > 0) {
      for (const torch::Tensor& p : params) start_.push_back(p.detach().clone());
    }
    if (objective.gradient_correction != nullptr) {
      for (size_t i = 0; i < params.size(); ++i) {
        const Tensor& c = objective.gradient_correction->tensors()[i];
        correction_.push_back(torch::from_blob(const_cast<float*>(c.floats().data()),
                                               params[i].sizes(), torch::kFloat32)
                                  .clone());
      }
    }
  }
  void AddGradient() const {
    if (mu_ <= 0 && correction_.empty()) return;
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> params = params_;
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor& grad = params[i].mutable_grad();
      if (!grad.defined()) grad = torch::zeros_like(params[i]);
      if (mu_ > 0) grad.add_(params[i].detach() - start_[i], mu_);
      if (!correction_.empty()) grad.add_(correction_[i]);
    }
  }

 private:
  double mu_;
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> start_;
  std::vector<torch::Tensor> correction_;
};

StatusOr<TrainStats> TrainDpSgd(Net& net, torch::optim::Optimizer& optimizer, const DataView& data,
                                const TrainingConfig& config, const DpSgdOptions& dp,
                                const ObjectiveTerms& terms) {
  const int64_t n = data.size();
  const double q = DpSampleRate(n, config.batch_size);
  const int64_t steps_per_epoch = DpStepsPerEpoch(n, config.batch_size);
  const double expected_batch = q * static_cast<double>(n);
  const double noise_std = dp.noise_multiplier * dp.max_grad_norm;
  // Sampling and noise from a CSPRNG (privacy/secure_random.h), never from
  // the job's seed or a statistical generator.
  std::optional<privacy::SecureRandom> own;
  if (dp.random == nullptr) own.emplace();
  privacy::SecureRandom& random = dp.random != nullptr ? *dp.random : *own;
  std::vector<float> noise;
  TrainStats stats;
  stats.examples = n;
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  FEDSILO_ASSIGN_OR_RETURN(std::vector<torch::Tensor> params,
                           DpParameters(*net, net->ParameterLayers()));
  for (int epoch = 0; epoch < config.local_epochs; ++epoch) {
    for (int64_t step = 0; step < steps_per_epoch; ++step) {
      // Poisson sampling: each example independently with probability q.
      std::vector<int64_t> batch;
      for (int64_t i = 0; i < n; ++i) {
        if (random.Bernoulli(q)) batch.push_back(i);
      }
      std::vector<torch::Tensor> sums(params.size());
      if (!batch.empty()) {
        auto [x, y] = MakeBatch(data, batch, 0, batch.size());
        TracedPass pass = TracedBackward(*net, x, y);
        const std::vector<NetImpl::Trace>& traces = pass.traces;
        const double value = pass.loss.item<double>() / static_cast<double>(batch.size());
        if (!std::isfinite(value)) {
          return Shareable(absl::InternalError(
              absl::StrCat("training diverged: loss is ", value, " at epoch ", epoch + 1, " step ",
                           stats.steps + 1, "; lower training.learning_rate")));
        }
        torch::NoGradGuard no_grad;
        PerExample pe = PerExampleGradients(traces, pass.grads);
        torch::Tensor clip =
            (dp.max_grad_norm / (pe.norm2.sqrt() + 1e-6)).clamp_max(1.0).to(torch::kFloat32);
        for (size_t l = 0; l < traces.size(); ++l) {
          const NetImpl::Trace& t = traces[l];
          torch::Tensor g = pe.bias[l] * clip.unsqueeze(1);  // clipped output gradients
          if (t.linear) {
            sums[2 * l] = g.t().mm(t.input.detach());
          } else {
            sums[2 * l] = (pe.weight[l] * clip.view({-1, 1, 1})).sum(0).view_as(t.conv->weight);
          }
          sums[2 * l + 1] = g.sum(0);
        }
        loss_sum += value * static_cast<double>(batch.size());
        correct += pass.logits.argmax(1).eq(y).sum().item<int64_t>();
        seen += static_cast<int64_t>(batch.size());
      }
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        torch::Tensor sum = sums[i].defined() ? sums[i] : torch::zeros_like(params[i]);
        noise.resize(static_cast<size_t>(params[i].numel()));
        random.FillGaussian(noise.data(), noise.size(), noise_std);
        torch::Tensor noisy =
            sum + torch::from_blob(noise.data(), params[i].sizes(), torch::kFloat32);
        params[i].mutable_grad() = noisy / expected_batch;
      }
      terms.AddGradient();
      optimizer.step();
      ++stats.steps;
    }
  }
  stats.loss = seen > 0 ? loss_sum / static_cast<double>(seen) : 0;
  stats.accuracy = seen > 0 ? static_cast<double>(correct) / static_cast<double>(seen) : 0;
  return stats;
}

}  // namespace

StatusOr<std::vector<double>> Model::PerExampleGradientNorms(const DataView& data, bool reference) {
  if (data.size() == 0) return absl::InvalidArgumentError("no examples");
  if (impl_->scripted) {
    return absl::InvalidArgumentError("per-example gradients are for the built-in models");
  }
  UseOneThreadHere();
  Net& net = impl_->net;
  net->train();
  std::vector<int64_t> all(static_cast<size_t>(data.size()));
  std::iota(all.begin(), all.end(), 0);
  std::vector<double> norms;
  try {
    if (!reference) {
      auto [x, y] = MakeBatch(data, all, 0, all.size());
      TracedPass pass = TracedBackward(*net, x, y);
      torch::NoGradGuard no_grad;
      torch::Tensor n2 =
          PerExampleGradients(pass.traces, pass.grads).norm2.to(torch::kFloat64).contiguous();
      norms.assign(n2.data_ptr<double>(), n2.data_ptr<double>() + n2.numel());
      for (double& v : norms) v = std::sqrt(v);
      return norms;
    }
    for (size_t i = 0; i < all.size(); ++i) {
      auto [x, y] = MakeBatch(data, all, i, i + 1);
      net->zero_grad();
      torch::nn::functional::cross_entropy(net->forward(x), y).backward();
      double n2 = 0;
      for (const auto& p : net->parameters()) n2 += p.grad().pow(2).sum().item<double>();
      norms.push_back(std::sqrt(n2));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  }
  return norms;
}

StatusOr<TrainStats> Model::Train(const DataView& data, const TrainingConfig& config, uint64_t seed,
                                  const DpSgdOptions* dp, const LocalObjective& objective) {
  if (data.size() == 0) return absl::InvalidArgumentError("no training examples");
  if (dp != nullptr && impl_->scripted) {
    return absl::InvalidArgumentError(
        "privacy.dp.mode local (DP-SGD) does not support model.torchscript: its per-example "
        "gradients come from the built-in models' known layers; use model.name logistic, mlp or "
        "cnn, or privacy.dp.mode central");
  }
  if (impl_->remote != nullptr) {
    if (objective.gradient_correction != nullptr) {
      FEDSILO_RETURN_IF_ERROR(Annotate(
          objective.gradient_correction->CheckSameLayout(impl_->layout), "gradient correction"));
    }
    ModelState trained;
    FEDSILO_ASSIGN_OR_RETURN(TrainStats stats,
                             impl_->remote->Train(impl_->state_sent ? nullptr : &impl_->state, data,
                                                  config, seed, objective, &trained));
    impl_->state = std::move(trained);
    impl_->state_sent = true;
    return stats;
  }
  UseOneThreadHere();
  Net& net = impl_->net;
  impl_->SetTraining(true);
  const std::vector<torch::Tensor> params = impl_->Parameters();
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (config.optimizer == OptimizerKind::kAdam) {
    optimizer = std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(config.learning_rate).weight_decay(config.weight_decay));
  } else {
    optimizer =
        std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(config.learning_rate)
                                                        .momentum(config.momentum)
                                                        .weight_decay(config.weight_decay));
  }
  if (objective.gradient_correction != nullptr) {
    FEDSILO_RETURN_IF_ERROR(Annotate(objective.gradient_correction->CheckSameLayout(impl_->layout),
                                     "gradient correction"));
  }
  const ObjectiveTerms terms(params, objective);
  if (dp != nullptr) {
    try {
      return TrainDpSgd(net, *optimizer, data, config, *dp, terms);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
    }
  }
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order(static_cast<size_t>(data.size()));
  std::iota(order.begin(), order.end(), 0);
  TrainStats stats;
  stats.examples = data.size();
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  const size_t batch = static_cast<size_t>(config.batch_size);
  try {
    for (int epoch = 0; epoch < config.local_epochs; ++epoch) {
      std::shuffle(order.begin(), order.end(), rng);
      for (size_t begin = 0; begin < order.size(); begin += batch) {
        const size_t end = std::min(order.size(), begin + batch);
        auto [x, y] = MakeBatch(data, order, begin, end);
        optimizer->zero_grad();
        torch::Tensor logits = impl_->Forward(x);
        torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
        const double value = loss.item<double>();
        if (!std::isfinite(value)) {
          return Shareable(absl::InternalError(
              absl::StrCat("training diverged: loss is ", value, " at epoch ", epoch + 1, " step ",
                           stats.steps + 1, "; lower training.learning_rate")));
        }
        loss.backward();
        terms.AddGradient();
        optimizer->step();
        ++stats.steps;
        loss_sum += value * static_cast<double>(end - begin);
        correct += logits.argmax(1).eq(y).sum().item<int64_t>();
        seen += static_cast<int64_t>(end - begin);
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model.torchscript: ", e.what()));
  }
  stats.loss = loss_sum / static_cast<double>(seen);
  stats.accuracy = static_cast<double>(correct) / static_cast<double>(seen);
  return stats;
}

StatusOr<std::vector<float>> Model::PredictLogProbabilities(const DataView& data) const {
  if (impl_->remote != nullptr) {
    StatusOr<std::vector<float>> logp = impl_->remote->Predict(
        impl_->state_sent ? nullptr : &impl_->state, data, impl_->spec.num_classes);
    if (logp.ok()) impl_->state_sent = true;
    return logp;
  }
  UseOneThreadHere();
  torch::NoGradGuard no_grad;
  impl_->SetTraining(false);
  std::vector<int64_t> order(static_cast<size_t>(data.size()));
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> out;
  out.reserve(order.size() * static_cast<size_t>(impl_->spec.num_classes));
  constexpr size_t kBatch = 1000;
  try {
    for (size_t begin = 0; begin < order.size(); begin += kBatch) {
      const size_t end = std::min(order.size(), begin + kBatch);
      torch::Tensor x = MakeBatch(data, order, begin, end).first;
      torch::Tensor logp = torch::log_softmax(impl_->Forward(x), 1).contiguous();
      const float* p = logp.data_ptr<float>();
      out.insert(out.end(), p, p + logp.numel());
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model.torchscript: ", e.what()));
  }
  return out;
}

StatusOr<ClassificationMetrics> Model::Evaluate(const DataView& data) const {
  if (data.size() == 0) return absl::InvalidArgumentError("no evaluation examples");
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> logp, PredictLogProbabilities(data));
  return MetricsOfPredictions(logp, impl_->spec.num_classes, data);
}

ClassificationMetrics MetricsOfPredictions(const std::vector<float>& log_probabilities,
                                           int num_classes, const DataView& data) {
  const size_t k = static_cast<size_t>(num_classes);
  std::vector<int64_t> labels, predicted;
  std::vector<float> scores;
  double loss_sum = 0;
  for (int64_t i = 0; i < data.size(); ++i) {
    const float* row = log_probabilities.data() + static_cast<size_t>(i) * k;
    const int64_t label = data.dataset->labels[static_cast<size_t>(data.indices[i])];
    labels.push_back(label);
    predicted.push_back(std::max_element(row, row + k) - row);
    loss_sum -= row[label];
    if (num_classes == 2) scores.push_back(std::exp(row[1]));
  }
  return ComputeClassificationMetrics(loss_sum / static_cast<double>(data.size()), labels,
                                      predicted, scores);
}

int64_t Model::num_parameters() const {
  if (impl_->remote != nullptr) return impl_->remote_parameters;
  int64_t n = 0;
  for (const auto& p : impl_->Parameters()) n += p.numel();
  return n;
}

std::string Model::Describe() const {
  const ModelSpec& s = impl_->spec;
  if (impl_->scripted) {
    return absl::StrCat("torchscript ", s.config.torchscript, ", ", num_parameters(),
                        " parameters, ", num_buffers(), " buffers (in a sandbox)");
  }
  std::string layout;
  if (s.config.kind == ModelKind::kCnn) {
    layout = absl::StrCat("conv32-conv64-512-", s.num_classes);
  } else {
    std::vector<int64_t> widths = {std::accumulate(s.input_shape.begin(), s.input_shape.end(),
                                                   int64_t{1}, std::multiplies<int64_t>())};
    if (s.config.kind == ModelKind::kMlp) {
      widths.insert(widths.end(), s.config.hidden.begin(), s.config.hidden.end());
    }
    widths.push_back(s.num_classes);
    layout = absl::StrJoin(widths, "-");
  }
  return absl::StrCat(ModelKindName(s.config.kind), " ", layout, ", ", num_parameters(),
                      " parameters");
}

int64_t Model::num_buffers() const {
  if (impl_->remote != nullptr) return impl_->remote_buffers;
  return static_cast<int64_t>(impl_->NamedBuffers().size());
}

StatusOr<std::string> Model::SaveTorchScriptBytes() const {
  if (!impl_->scripted) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", ModelKindName(impl_->spec.config.kind),
                     " model has no TorchScript form (only model.torchscript models do)"));
  }
  if (impl_->remote != nullptr) {
    if (!impl_->state_sent) {
      FEDSILO_RETURN_IF_ERROR(impl_->remote->SetState(impl_->state));
      impl_->state_sent = true;
    }
    return impl_->remote->Save();
  }
  std::ostringstream bytes;
  try {
    impl_->script.save(bytes);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  }
  return std::move(bytes).str();
}

Status Model::SaveTorchScript(const std::string& path) const {
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, SaveTorchScriptBytes());
  return WriteFileAtomically(path, bytes);
}

StatusOr<std::string> Model::TorchScriptWithState(const std::string& module_path,
                                                  const ModelState& state, const Sandbox* sandbox) {
  if (sandbox == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(module_path, ": TorchScript modules run only in a sandbox process"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, ReadFileOpeningSealed(module_path));
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<SandboxSession> session,
                           SandboxSession::Start(*sandbox, module_path));
  FEDSILO_RETURN_IF_ERROR(session->Load(bytes, {}, 0).status());
  FEDSILO_RETURN_IF_ERROR(
      Annotate(session->SetState(state), absl::StrCat("the module ", module_path)));
  return session->Save();
}

Status Model::ExportTorchScript(const std::string& module_path, const ModelState& state,
                                const std::string& out, const Sandbox* sandbox) {
  FEDSILO_ASSIGN_OR_RETURN(std::string saved, TorchScriptWithState(module_path, state, sandbox));
  return WriteFileAtomically(out, saved);  // the user's file, in the clear
}

Status WarmUpLibtorch() {
  UseOneThreadHere();
  try {
    // A step of each kind of layer the built-in models and modules use,
    // forward and backward, and a TorchScript module saved and loaded.
    torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3).padding(1)),
                              torch::nn::BatchNorm2d(2), torch::nn::ReLU(), torch::nn::MaxPool2d(2),
                              torch::nn::Flatten(), torch::nn::Linear(8, 3),
                              torch::nn::Dropout(0.1));
    torch::optim::Adam adam(net->parameters(), 1e-3);
    torch::Tensor x = torch::randn({4, 1, 4, 4});
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        torch::log_softmax(net->forward(x), 1), torch::tensor({0, 1, 2, 0}));
    loss.backward();
    adam.step();
    torch::jit::Module m("warm");
    m.register_buffer("b", torch::zeros({2}));
    m.define("def forward(self, x):\n  return x + self.b\n");
    std::ostringstream out;
    m.save(out);
    std::istringstream in(out.str());
    torch::jit::Module back = torch::jit::load(in);
    (void)back.forward({torch::ones({2})});
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("warming libtorch up: ", FirstLine(e)));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::ml
