// TorchScript modules are untrusted code: a job's module could read a file
// into a buffer (aten::from_file), write one (aten::save) or print what it
// sees (prim::Print), and its weights come back to the data scientist. Before
// a module is run for training, every method of it and of its submodules
// (hooks and __setstate__ included, with every function they call inlined) is
// checked against an allowlist of operations: tensor arithmetic, shapes and
// indexing, reductions, the layers and losses people use, and the scalar,
// list and control-flow operations of scripted code. Anything else -- an
// operation that touches files, processes or the network, a custom class
// (torch.classes), an operator from another namespace, a call that cannot be
// followed -- is refused, naming the operation and the method.
//
// The check runs where the module is loaded: inside the sandbox
// (ml/sandbox.h), so a module that breaks the loader gains nothing.
#ifndef FEDSILO_ML_TORCHSCRIPT_CHECK_H_
#define FEDSILO_ML_TORCHSCRIPT_CHECK_H_

#include <string>
#include <vector>

#include "core/status.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace fedsilo::ml {

// What the check found wrong: the operation and the method that calls it.
struct RefusedOp {
  std::string op;      // e.g. "aten::from_file"
  std::string method;  // e.g. "forward", or "Sub.forward" for a submodule's
};

// The first operation of `module` outside the allowlist, if any.
std::vector<RefusedOp> FindRefusedOps(const torch::jit::Module& module);

// The message for a refused operation, as the sandbox's host writes it.
std::string RefusedOpMessage(const RefusedOp& refused);

// The allowlist: qualified names ("aten::linear") of the operators a module
// may call, and of the interpreter's own nodes (prim::If, prim::GetAttr...).
const std::vector<std::string>& AllowedTorchScriptOps();

// The operators in this libtorch's registry that reach outside the process's
// tensors -- a file named by a string argument, the network (c10d), the
// profiler, printing and warnings, threads (fork/wait), custom classes --
// derived from each operator's schema. None may be allowed (tested).
std::vector<std::string> RegisteredOpsThatReachOutside();
// Whether the registry has an operator of this qualified name.
bool IsRegisteredOp(const std::string& name);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_TORCHSCRIPT_CHECK_H_
