#include "ml/scripted_module.h"

#include <torch/script.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"

namespace fedsilo::ml {

namespace {

// `module` as a TorchScript module of class `class_name`.
torch::jit::Module Make(const ScriptedModule& module, const std::string& class_name) {
  torch::jit::Module m(class_name);
  m.register_attribute("training", c10::BoolType::get(), true);  // as nn.Module has
  for (const auto& [name, shape] : module.parameters) {
    m.register_parameter(name, torch::zeros(shape, torch::kFloat32).requires_grad_(),
                         /*is_buffer=*/false);
  }
  for (const auto& [name, shape] : module.buffers) {
    m.register_buffer(name, torch::zeros(shape, torch::kFloat32));
  }
  for (const auto& [name, sub] : module.submodules) {
    m.register_module(name, Make(sub, absl::StrCat(class_name, "_", name)));
  }
  if (!module.methods.empty()) m.define(module.methods);
  return m;
}

}  // namespace

Status WriteScriptedModule(const ScriptedModule& module, const std::string& path) {
  std::ostringstream bytes;
  try {
    torch::jit::Module m = Make(module, "__torch__.Scripted");
    m.save(bytes);
  } catch (const std::exception& e) {
    // TorchScript's message: the error, then the source line it points at.
    std::string what = e.what();
    what = what.substr(0, what.find("Serialized"));
    return absl::InvalidArgumentError(
        absl::StrCat("the module's source does not compile: ", what.substr(0, 2000)));
  }
  return WriteFileAtomically(path, bytes.str());
}

}  // namespace fedsilo::ml
