// SCAFFOLD's control variates travel with the model in one ModelState: the
// model's tensors, then the control variate's under "control/<name>". The
// transport, the file format and the layout checks need nothing new.
#ifndef FEDSILO_CORE_CONTROL_VARIATES_H_
#define FEDSILO_CORE_CONTROL_VARIATES_H_

#include <utility>

#include "absl/strings/string_view.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo {

inline constexpr absl::string_view kControlPrefix = "control/";

// {model tensors, control tensors with the prefix removed}, in order.
std::pair<ModelState, ModelState> SplitControl(ModelState state);
// Appends `control`'s tensors to `model` under prefixed names.
Status AppendControl(ModelState& model, const ModelState& control);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_CONTROL_VARIATES_H_
