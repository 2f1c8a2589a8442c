#include "ml/torchscript_check.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/operator.h>
#include <torch/script.h>

#include <algorithm>
#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fedsilo::ml {
namespace {

// The interpreter's own nodes: control flow, constants, attributes and
// containers. They compute nothing outside the graph.
constexpr const char* kInterpreterNodes[] = {
    "prim::Constant",
    "prim::If",
    "prim::Loop",
    "prim::GetAttr",
    "prim::SetAttr",
    "prim::ListConstruct",
    "prim::ListUnpack",
    "prim::TupleConstruct",
    "prim::TupleUnpack",
    "prim::TupleIndex",
    "prim::TupleSlice",
    "prim::DictConstruct",
    "prim::CreateObject",
    "prim::isinstance",
    "prim::Uninitialized",
    "prim::unchecked_cast",
    "prim::RaiseException",
    "prim::NumToTensor",
    "prim::ImplicitTensorToNum",
};

// Operators, by base name (every overload): tensor arithmetic and
// comparisons, reductions, linear algebra, shapes, views and indexing,
// creation, activations, the layers and losses of torch.nn, the random draws
// dropout and initialisation make, and the scalar, string-formatting and list
// operations of scripted Python.
constexpr const char* kOperators[] = {
    // Arithmetic and elementwise functions.
    "aten::abs",
    "aten::abs_",
    "aten::absolute",
    "aten::acos",
    "aten::acosh",
    "aten::add",
    "aten::add_",
    "aten::addbmm",
    "aten::addcdiv",
    "aten::addcdiv_",
    "aten::addcmul",
    "aten::addcmul_",
    "aten::addmm",
    "aten::addmm_",
    "aten::addmv",
    "aten::asin",
    "aten::asinh",
    "aten::atan",
    "aten::atan2",
    "aten::atanh",
    "aten::baddbmm",
    "aten::bitwise_and",
    "aten::bitwise_not",
    "aten::bitwise_or",
    "aten::bitwise_xor",
    "aten::ceil",
    "aten::ceil_",
    "aten::clamp",
    "aten::clamp_",
    "aten::clamp_max",
    "aten::clamp_max_",
    "aten::clamp_min",
    "aten::clamp_min_",
    "aten::clip",
    "aten::cos",
    "aten::cosh",
    "aten::div",
    "aten::div_",
    "aten::divide",
    "aten::erf",
    "aten::erfc",
    "aten::exp",
    "aten::exp_",
    "aten::exp2",
    "aten::expm1",
    "aten::floor",
    "aten::floor_",
    "aten::floor_divide",
    "aten::floordiv",
    "aten::fmod",
    "aten::frac",
    "aten::hypot",
    "aten::lerp",
    "aten::lerp_",
    "aten::log",
    "aten::log_",
    "aten::log10",
    "aten::log1p",
    "aten::log2",
    "aten::logaddexp",
    "aten::logical_and",
    "aten::logical_not",
    "aten::logical_or",
    "aten::logical_xor",
    "aten::maximum",
    "aten::minimum",
    "aten::mul",
    "aten::mul_",
    "aten::multiply",
    "aten::nan_to_num",
    "aten::neg",
    "aten::neg_",
    "aten::negative",
    "aten::pow",
    "aten::pow_",
    "aten::reciprocal",
    "aten::remainder",
    "aten::round",
    "aten::rsqrt",
    "aten::rsub",
    "aten::sgn",
    "aten::sign",
    "aten::sin",
    "aten::sinh",
    "aten::sqrt",
    "aten::sqrt_",
    "aten::square",
    "aten::sub",
    "aten::sub_",
    "aten::subtract",
    "aten::tan",
    "aten::tanh",
    "aten::tanh_",
    "aten::true_divide",
    "aten::trunc",
    "aten::where",
    "aten::__and__",
    "aten::__or__",
    "aten::__xor__",
    "aten::__not__",
    "aten::__lshift__",
    "aten::__rshift__",
    "aten::__round_to_zero_floordiv",
    // Comparisons and tests.
    "aten::eq",
    "aten::ne",
    "aten::lt",
    "aten::le",
    "aten::gt",
    "aten::ge",
    "aten::equal",
    "aten::greater",
    "aten::greater_equal",
    "aten::less",
    "aten::less_equal",
    "aten::not_equal",
    "aten::isnan",
    "aten::isinf",
    "aten::isfinite",
    "aten::isclose",
    "aten::allclose",
    "aten::__is__",
    "aten::__isnot__",
    "aten::__contains__",
    "aten::is_floating_point",
    "aten::is_contiguous",
    "aten::is_grad_enabled",
    "aten::is_scripting",
    // Reductions and sorting.
    "aten::sum",
    "aten::mean",
    "aten::prod",
    "aten::max",
    "aten::min",
    "aten::amax",
    "aten::amin",
    "aten::aminmax",
    "aten::argmax",
    "aten::argmin",
    "aten::all",
    "aten::any",
    "aten::std",
    "aten::var",
    "aten::var_mean",
    "aten::std_mean",
    "aten::norm",
    "aten::frobenius_norm",
    "aten::linalg_vector_norm",
    "aten::linalg_norm",
    "aten::logsumexp",
    "aten::cumsum",
    "aten::cumprod",
    "aten::topk",
    "aten::sort",
    "aten::argsort",
    "aten::median",
    "aten::count_nonzero",
    "aten::nansum",
    "aten::nanmean",
    // Linear algebra.
    "aten::matmul",
    "aten::mm",
    "aten::bmm",
    "aten::mv",
    "aten::dot",
    "aten::einsum",
    "aten::outer",
    "aten::t",
    "aten::linear",
    "aten::bilinear",
    "aten::cdist",
    // Shapes, views, indexing.
    "aten::view",
    "aten::view_as",
    "aten::reshape",
    "aten::reshape_as",
    "aten::flatten",
    "aten::unflatten",
    "aten::squeeze",
    "aten::squeeze_",
    "aten::unsqueeze",
    "aten::unsqueeze_",
    "aten::permute",
    "aten::transpose",
    "aten::transpose_",
    "aten::movedim",
    "aten::contiguous",
    "aten::expand",
    "aten::expand_as",
    "aten::repeat",
    "aten::repeat_interleave",
    "aten::tile",
    "aten::cat",
    "aten::concat",
    "aten::stack",
    "aten::hstack",
    "aten::vstack",
    "aten::split",
    "aten::split_with_sizes",
    "aten::chunk",
    "aten::unbind",
    "aten::narrow",
    "aten::select",
    "aten::slice",
    "aten::index",
    "aten::index_select",
    "aten::index_put",
    "aten::index_put_",
    "aten::index_add",
    "aten::index_fill",
    "aten::gather",
    "aten::scatter",
    "aten::scatter_",
    "aten::scatter_add",
    "aten::scatter_add_",
    "aten::masked_fill",
    "aten::masked_fill_",
    "aten::masked_select",
    "aten::flip",
    "aten::roll",
    "aten::tril",
    "aten::triu",
    "aten::diag",
    "aten::diagonal",
    "aten::nonzero",
    "aten::broadcast_tensors",
    "aten::broadcast_to",
    "aten::meshgrid",
    "aten::pad",
    "aten::constant_pad_nd",
    "aten::reflection_pad1d",
    "aten::reflection_pad2d",
    "aten::replication_pad1d",
    "aten::replication_pad2d",
    "aten::one_hot",
    "aten::size",
    "aten::dim",
    "aten::numel",
    "aten::len",
    "aten::__getitem__",
    "aten::Size",
    // Creating tensors and converting them.
    "aten::zeros",
    "aten::zeros_like",
    "aten::ones",
    "aten::ones_like",
    "aten::full",
    "aten::full_like",
    "aten::empty",
    "aten::empty_like",
    "aten::arange",
    "aten::linspace",
    "aten::eye",
    "aten::tensor",
    "aten::scalar_tensor",
    "aten::as_tensor",
    "aten::clone",
    "aten::detach",
    "aten::detach_",
    "aten::to",
    "aten::type_as",
    "aten::copy_",
    "aten::fill_",
    "aten::zero_",
    "aten::new_zeros",
    "aten::new_ones",
    "aten::new_full",
    "aten::new_empty",
    "aten::item",
    "aten::requires_grad_",
    "aten::_unwrap_optional",
    // Activations and normalising functions.
    "aten::relu",
    "aten::relu_",
    "aten::relu6",
    "aten::leaky_relu",
    "aten::leaky_relu_",
    "aten::elu",
    "aten::elu_",
    "aten::selu",
    "aten::celu",
    "aten::gelu",
    "aten::silu",
    "aten::silu_",
    "aten::mish",
    "aten::softplus",
    "aten::hardtanh",
    "aten::hardtanh_",
    "aten::hardsigmoid",
    "aten::hardswish",
    "aten::threshold",
    "aten::prelu",
    "aten::glu",
    "aten::log_sigmoid",
    "aten::sigmoid",
    "aten::sigmoid_",
    "aten::softmax",
    "aten::log_softmax",
    "aten::hardshrink",
    "aten::softshrink",
    "aten::logit",
    // Layers.
    "aten::conv1d",
    "aten::conv2d",
    "aten::conv3d",
    "aten::conv_transpose1d",
    "aten::conv_transpose2d",
    "aten::conv_transpose3d",
    "aten::convolution",
    "aten::_convolution",
    "aten::batch_norm",
    "aten::layer_norm",
    "aten::group_norm",
    "aten::instance_norm",
    "aten::dropout",
    "aten::dropout_",
    "aten::feature_dropout",
    "aten::alpha_dropout",
    "aten::feature_alpha_dropout",
    "aten::embedding",
    "aten::embedding_bag",
    "aten::max_pool1d",
    "aten::max_pool2d",
    "aten::max_pool3d",
    "aten::max_pool1d_with_indices",
    "aten::max_pool2d_with_indices",
    "aten::avg_pool1d",
    "aten::avg_pool2d",
    "aten::avg_pool3d",
    "aten::adaptive_avg_pool1d",
    "aten::adaptive_avg_pool2d",
    "aten::adaptive_avg_pool3d",
    "aten::adaptive_max_pool1d",
    "aten::adaptive_max_pool2d",
    "aten::upsample_nearest1d",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::pixel_shuffle",
    "aten::pixel_unshuffle",
    "aten::lstm",
    "aten::gru",
    "aten::rnn_tanh",
    "aten::rnn_relu",
    "aten::lstm_cell",
    "aten::gru_cell",
    "aten::rnn_tanh_cell",
    "aten::rnn_relu_cell",
    "aten::cosine_similarity",
    "aten::pairwise_distance",
    "aten::channel_shuffle",
    "aten::_native_multi_head_attention",
    "aten::_transform_bias_rescale_qkv",
    // Losses.
    "aten::cross_entropy_loss",
    "aten::nll_loss",
    "aten::nll_loss_nd",
    "aten::nll_loss2d",
    "aten::mse_loss",
    "aten::l1_loss",
    "aten::smooth_l1_loss",
    "aten::huber_loss",
    "aten::binary_cross_entropy",
    "aten::binary_cross_entropy_with_logits",
    "aten::kl_div",
    "aten::margin_ranking_loss",
    "aten::hinge_embedding_loss",
    "aten::cosine_embedding_loss",
    "aten::poisson_nll_loss",
    "aten::soft_margin_loss",
    "aten::triplet_margin_loss",
    // Random draws (dropout, initialisation, noise layers).
    "aten::rand",
    "aten::rand_like",
    "aten::randn",
    "aten::randn_like",
    "aten::randint",
    "aten::randint_like",
    "aten::randperm",
    "aten::bernoulli",
    "aten::bernoulli_",
    "aten::uniform_",
    "aten::normal_",
    "aten::normal",
    "aten::multinomial",
    // Scalars, strings and lists of scripted Python.
    "aten::Int",
    "aten::Float",
    "aten::Bool",
    "aten::ScalarImplicit",
    "aten::IntImplicit",
    "aten::FloatImplicit",
    "aten::format",
    "aten::append",
    "aten::extend",
    "aten::insert",
    "aten::pop",
    "aten::list",
    "aten::reverse",
    "aten::copy",
    "aten::__range_length",
    "aten::__derive_index",
    "aten::_set_item",
    "aten::keys",
    "aten::values",
    "aten::items",
    "aten::get",
    "aten::dict",
    "aten::str",
    "aten::join",
    "aten::startswith",
    "aten::endswith",
    "aten::sqrt",
    "aten::mathremainder",
    "aten::divmod",
    "prim::min",
    "prim::max",
    "prim::abs",
    "prim::dtype",
    "prim::device",
    "prim::layout",
    "prim::is_cuda",
    "prim::is_cpu",
    "prim::requires_grad",
    "prim::unchecked_unwrap_optional",
    "prim::StringIndex",
    "prim::tolist",
};

// Whether `type`, or a type it holds, reaches outside the process's tensors:
// a custom class (torch.classes), a future, a remote reference, a capsule.
// A value of type Any could hold any of those; in an operator's schema, Any
// only says the operator takes every type (len, tuple indexing): `values`
// tells which is asked.
bool ReachesOutside(const c10::TypePtr& type, bool values = true) {
  if (type == nullptr) return false;
  switch (type->kind()) {
    case c10::TypeKind::FutureType:
    case c10::TypeKind::RRefType:
    case c10::TypeKind::CapsuleType:
    case c10::TypeKind::StorageType:
    case c10::TypeKind::StreamObjType:
    case c10::TypeKind::AnyClassType:
      return true;
    case c10::TypeKind::AnyType:
      if (values) return true;
      break;
    case c10::TypeKind::ClassType: {
      const auto cls = type->cast<c10::ClassType>();
      return cls->name().has_value() &&
             absl::StartsWith(cls->name()->qualifiedName(), "__torch__.torch.classes");
    }
    default:
      break;
  }
  for (const c10::TypePtr& contained : type->containedTypes()) {
    if (ReachesOutside(contained, values)) return true;
  }
  return false;
}

const std::set<std::string>& AllowedSet() {
  static const std::set<std::string>* allowed = [] {
    auto* s = new std::set<std::string>(std::begin(kInterpreterNodes), std::end(kInterpreterNodes));
    s->insert(std::begin(kOperators), std::end(kOperators));
    return s;
  }();
  return *allowed;
}

// The refusals in one method's graph, every call inlined.
void CheckGraph(torch::jit::Graph& graph, const std::string& method,
                std::vector<RefusedOp>* refused) {
  std::shared_ptr<torch::jit::Graph> g = graph.copy();
  torch::jit::Inline(*g);
  const std::set<std::string>& allowed = AllowedSet();
  std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* block) {
    for (torch::jit::Node* node : block->nodes()) {
      const std::string kind = node->kind().toQualString();
      bool outside = false;
      for (const torch::jit::Value* v : node->outputs())
        outside = outside || ReachesOutside(v->type());
      for (const torch::jit::Value* v : node->inputs())
        outside = outside || ReachesOutside(v->type());
      if (outside || allowed.count(kind) == 0) {
        refused->push_back({outside && allowed.count(kind) != 0
                                ? absl::StrCat(kind, " on a custom class or a future")
                                : kind,
                            method});
      }
      for (torch::jit::Block* b : node->blocks()) walk(b);
    }
  };
  walk(g->block());
}

}  // namespace

const std::vector<std::string>& AllowedTorchScriptOps() {
  static const std::vector<std::string>* ops =
      new std::vector<std::string>(AllowedSet().begin(), AllowedSet().end());
  return *ops;
}

std::vector<RefusedOp> FindRefusedOps(const torch::jit::Module& module) {
  std::vector<RefusedOp> refused;
  std::vector<std::pair<std::string, torch::jit::Module>> modules = {{"", module}};
  for (const auto& sub : module.named_modules()) {
    if (!sub.name.empty()) modules.emplace_back(sub.name, sub.value);
  }
  for (const auto& entry : modules) {
    const std::string& path = entry.first;  // (a lambda may not capture a structured binding)
    const c10::ClassTypePtr type = entry.second.type();
    const auto label = [&](const std::string& name) {
      return path.empty() ? name : absl::StrCat(path, ".", name);
    };
    for (size_t i = 0; i < type->numAttributes(); ++i) {
      if (ReachesOutside(type->getAttribute(i))) {
        refused.push_back({absl::StrCat("an attribute of type ", type->getAttribute(i)->str()),
                           label(type->getAttributeName(i))});
      }
    }
    std::vector<torch::jit::Function*> functions = type->methods();
    for (torch::jit::Function* hook : type->getForwardHooks()) functions.push_back(hook);
    for (torch::jit::Function* hook : type->getForwardPreHooks()) functions.push_back(hook);
    for (torch::jit::Function* f : functions) {
      if (!f->isGraphFunction()) {
        refused.push_back({"a method that is not TorchScript", label(f->name())});
        continue;
      }
      CheckGraph(*torch::jit::toGraphFunction(*f).graph(), label(f->name()), &refused);
    }
  }
  return refused;
}

std::string RefusedOpMessage(const RefusedOp& refused) {
  return absl::StrCat("method '", refused.method, "' uses ", refused.op,
                      ", which is not among the operations a TorchScript module may use in a "
                      "silo (tensor arithmetic, shapes, reductions, the layers and losses of "
                      "torch.nn; nothing that touches files, processes, the network or custom "
                      "classes)");
}

bool IsRegisteredOp(const std::string& name) {
  for (const auto& op : torch::jit::getAllOperators()) {
    if (op->schema().name() == name) return true;
  }
  return false;
}

std::vector<std::string> RegisteredOpsThatReachOutside() {
  std::set<std::string> out;
  for (const auto& op : torch::jit::getAllOperators()) {
    const c10::FunctionSchema& s = op->schema();
    const std::string& name = s.name();
    const std::string ns = name.substr(0, name.find("::"));
    bool outside = ns == "c10d" || ns == "profiler" ||               // the network; trace files
                   name == "prim::Print" || name == "aten::warn" ||  // stdout, stderr
                   name == "prim::fork" || name == "aten::wait" ||   // threads
                   name == "prim::TimePoint" || name == "prim::AddStatValue";  // clocks, stats
    for (const c10::Argument& a : s.arguments()) {
      // A string that names a file.
      const bool file =
          a.type()->kind() == c10::TypeKind::StringType &&
          (a.name() == "filename" || a.name() == "path" || a.name() == "f" || a.name() == "file");
      outside = outside || file || ReachesOutside(a.type(), /*values=*/false);
    }
    for (const c10::Argument& r : s.returns()) {
      outside = outside || ReachesOutside(r.type(), /*values=*/false);
    }
    if (outside) out.insert(name);
  }
  return {out.begin(), out.end()};
}

}  // namespace fedsilo::ml
