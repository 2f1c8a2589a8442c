#include "core/control_variates.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fedsilo {

std::pair<ModelState, ModelState> SplitControl(ModelState state) {
  ModelState model, control;
  for (Tensor& t : state.mutable_tensors()) {
    if (absl::StartsWith(t.name(), kControlPrefix)) {
      control.Add(Tensor::FromFloats(t.name().substr(kControlPrefix.size()), t.shape(), t.floats()))
          .IgnoreError();
    } else {
      model.Add(std::move(t)).IgnoreError();
    }
  }
  return {std::move(model), std::move(control)};
}

Status AppendControl(ModelState& model, const ModelState& control) {
  for (const Tensor& t : control.tensors()) {
    FEDSILO_RETURN_IF_ERROR(model.Add(
        Tensor::FromFloats(absl::StrCat(kControlPrefix, t.name()), t.shape(), t.floats())));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo
