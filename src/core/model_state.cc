#include "core/model_state.h"

#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/kernels.h"

namespace fedsilo {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt64:
      return "int64";
  }
  return "unknown";
}

bool IsValidDType(uint8_t value) { return value >= 1 && value <= 3; }

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

namespace {
int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}
}  // namespace

Tensor::Tensor(std::string name, DType dtype, std::vector<int64_t> shape)
    : name_(std::move(name)),
      dtype_(dtype),
      shape_(std::move(shape)),
      num_elements_(Product(shape_)),
      data_(new std::byte[num_bytes()]()) {}

Tensor Tensor::FromFloats(std::string name, std::vector<int64_t> shape,
                          absl::Span<const float> values) {
  Tensor t(std::move(name), DType::kFloat32, std::move(shape));
  std::memcpy(t.data(), values.data(), t.num_bytes());
  return t;
}

Tensor::Tensor(const Tensor& other)
    : name_(other.name_),
      dtype_(other.dtype_),
      shape_(other.shape_),
      num_elements_(other.num_elements_),
      data_(new std::byte[other.num_bytes()]) {
  std::memcpy(data_.get(), other.data_.get(), num_bytes());
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

absl::Span<float> Tensor::floats() {
  return absl::Span<float>(reinterpret_cast<float*>(data_.get()),
                           static_cast<size_t>(num_elements_));
}

absl::Span<const float> Tensor::floats() const {
  return absl::Span<const float>(reinterpret_cast<const float*>(data_.get()),
                                 static_cast<size_t>(num_elements_));
}

Status ModelState::Add(Tensor tensor) {
  if (tensor.name().empty()) return absl::InvalidArgumentError("tensor name is empty");
  if (Find(tensor.name()) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", tensor.name(), "'"));
  }
  tensors_.push_back(std::move(tensor));
  return absl::OkStatus();
}

const Tensor* ModelState::Find(absl::string_view name) const {
  for (const Tensor& t : tensors_) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

int64_t ModelState::num_elements() const {
  int64_t n = 0;
  for (const Tensor& t : tensors_) n += t.num_elements();
  return n;
}

Status ModelState::CheckSameLayout(const ModelState& other) const {
  if (tensors_.size() != other.tensors_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("has ", tensors_.size(), " tensors, expected ", other.tensors_.size()));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& a = tensors_[i];
    const Tensor& b = other.tensors_[i];
    if (a.name() != b.name()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", i, " is named '", a.name(), "', expected '", b.name(), "'"));
    }
    if (a.dtype() != b.dtype()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", a.name(), "' has dtype ",
                                                     DTypeName(a.dtype()), ", expected ",
                                                     DTypeName(b.dtype())));
    }
    if (a.shape() != b.shape()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", a.name(), "' has shape ",
                                                     ShapeToString(a.shape()), ", expected ",
                                                     ShapeToString(b.shape())));
    }
  }
  return absl::OkStatus();
}

Status ModelState::CheckFinite() const {
  for (const Tensor& t : tensors_) {
    if (t.dtype() == DType::kFloat32) {
      absl::Span<const float> v = t.floats();
      for (size_t i = 0; i < v.size(); ++i) {
        if (!std::isfinite(v[i])) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor '", t.name(), "' holds ", v[i], " at index ", i));
        }
      }
    } else if (t.dtype() == DType::kFloat64) {
      const double* v = reinterpret_cast<const double*>(t.data());
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        if (!std::isfinite(v[i])) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor '", t.name(), "' holds ", v[i], " at index ", i));
        }
      }
    }
  }
  return absl::OkStatus();
}

ModelState ModelState::ZerosLike() const {
  ModelState zeros;
  for (const Tensor& t : tensors_) zeros.tensors_.emplace_back(t.name(), t.dtype(), t.shape());
  return zeros;
}

double ClipL2Norm(ModelState& state, double bound, absl::string_view skip_prefix) {
  auto included = [&](const Tensor& t) {
    return skip_prefix.empty() || !absl::StartsWith(t.name(), skip_prefix);
  };
  double squares = 0;
  for (const Tensor& t : state.tensors()) {
    if (included(t)) squares += kernels::SquaredNorm(t.floats());
  }
  const double norm = std::sqrt(squares);
  if (norm <= bound) return norm;
  const float scale = static_cast<float>(bound / norm);
  for (Tensor& t : state.mutable_tensors()) {
    if (included(t)) kernels::Scale(scale, t.floats());
  }
  return norm;
}

}  // namespace fedsilo
