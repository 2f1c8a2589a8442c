// Writing a TorchScript module without Python: its methods' TorchScript
// source compiled here (torch::jit::Module::define), with float32
// parameters and buffers of the given shapes (zeros). For tests that play a
// hostile data scientist, and for examples. Compiling runs none of the code.
#ifndef FEDSILO_ML_SCRIPTED_MODULE_H_
#define FEDSILO_ML_SCRIPTED_MODULE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace fedsilo::ml {

struct ScriptedModule {
  std::vector<std::pair<std::string, std::vector<int64_t>>> parameters;
  std::vector<std::pair<std::string, std::vector<int64_t>>> buffers;
  // TorchScript source: `def forward(self, x): ...` and any other methods.
  std::string methods;
  // Modules held as attributes of this one (as a vertical job's bottom
  // models are), before its methods are compiled.
  std::vector<std::pair<std::string, ScriptedModule>> submodules;
};

// InvalidArgument with TorchScript's message when the source does not compile.
Status WriteScriptedModule(const ScriptedModule& module, const std::string& path);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_SCRIPTED_MODULE_H_
