// `fedsilo check-module FILE`: what a silo's owner reads before listing a
// TorchScript module in the policy's allowed_models -- its digest, and
// whether it passes the operation check, run in a sandbox as a silo runs it.
#ifndef FEDSILO_CLI_MODULE_COMMAND_H_
#define FEDSILO_CLI_MODULE_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

// Prints the module's digest and the check's verdict. InvalidArgument (exit
// 2) naming the operation and the method when the check refuses it, or when
// the file is not a TorchScript module.
Status CheckModuleCommand(const std::string& path, bool json);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_MODULE_COMMAND_H_
