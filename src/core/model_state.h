// ModelState: the weights (or an update) of a model as an ordered list of named
// tensors, independent of any ML framework. The unit that silos and the
// orchestrator exchange, aggregate and store.
//
// Thread safety: none; a ModelState is a value (copyable, movable). Concurrent
// reads of a const ModelState are safe.
#ifndef FEDSILO_CORE_MODEL_STATE_H_
#define FEDSILO_CORE_MODEL_STATE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/status.h"

namespace fedsilo {

// Element types a tensor can hold. Numeric values are part of the file format:
// never renumber.
enum class DType : uint8_t { kFloat32 = 1, kFloat64 = 2, kInt64 = 3 };

size_t DTypeSize(DType dtype);
absl::string_view DTypeName(DType dtype);
// Returns false for values not in the enum (used when reading files).
bool IsValidDType(uint8_t value);

// Formats a shape as "[200, 784]".
std::string ShapeToString(absl::Span<const int64_t> shape);

// One named tensor with contiguous row-major storage, zero-initialised.
class Tensor {
 public:
  // REQUIRES: every dimension >= 0.
  Tensor(std::string name, DType dtype, std::vector<int64_t> shape);
  // A float32 tensor holding `values`. REQUIRES: values.size() == product(shape).
  static Tensor FromFloats(std::string name, std::vector<int64_t> shape,
                           absl::Span<const float> values);

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  const std::string& name() const { return name_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t num_elements() const { return num_elements_; }
  size_t num_bytes() const { return static_cast<size_t>(num_elements_) * DTypeSize(dtype_); }

  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  // REQUIRES: dtype() == DType::kFloat32.
  absl::Span<float> floats();
  absl::Span<const float> floats() const;

 private:
  std::string name_;
  DType dtype_;
  std::vector<int64_t> shape_;
  int64_t num_elements_;
  std::unique_ptr<std::byte[]> data_;
};

class ModelState {
 public:
  ModelState() = default;

  // Appends a tensor. Fails with InvalidArgument if the name is empty or taken.
  Status Add(Tensor tensor);

  const std::vector<Tensor>& tensors() const { return tensors_; }
  std::vector<Tensor>& mutable_tensors() { return tensors_; }
  size_t size() const { return tensors_.size(); }
  bool empty() const { return tensors_.empty(); }
  // Returns nullptr when no tensor has that name.
  const Tensor* Find(absl::string_view name) const;

  // Total number of elements over all tensors.
  int64_t num_elements() const;

  // OK when `other` has the same tensor names, in the same order, with the same
  // dtypes and shapes; otherwise InvalidArgument naming the first difference,
  // e.g. "tensor 'fc1.weight' has shape [200, 64], expected [200, 784]".
  Status CheckSameLayout(const ModelState& other) const;

  // OK when every float value is finite; otherwise InvalidArgument naming the
  // tensor and the index of the first NaN or infinity.
  Status CheckFinite() const;

  // A state with the same layout, all values zero.
  ModelState ZerosLike() const;

 private:
  std::vector<Tensor> tensors_;
};

// Scales the tensors of `state` (all float32) down to a joint L2 norm of at
// most `bound`, leaving out those whose name starts with `skip_prefix` when
// it is not empty. Returns their norm before clipping.
double ClipL2Norm(ModelState& state, double bound, absl::string_view skip_prefix = {});

}  // namespace fedsilo

#endif  // FEDSILO_CORE_MODEL_STATE_H_
