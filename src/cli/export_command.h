// `fedsilo export RUN`: a recorded run's final model (or a kept checkpoint)
// as an .fsm file or, for model.torchscript jobs, as a TorchScript file that
// torch.jit.load reads. Reads the run store and run folders of --workdir (a
// `fedsilo run` work folder, or an orchestrator's state folder).
#ifndef FEDSILO_CLI_EXPORT_COMMAND_H_
#define FEDSILO_CLI_EXPORT_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

struct ExportOptions {
  std::string workdir = ".";
  std::string run;     // run id, unique prefix, or job id
  std::string format;  // "fsm" or "torchscript"; empty = torchscript for such jobs, else fsm
  int round = 0;       // 0 = the final model
  std::string out;     // required
  bool json = false;
};

// InvalidArgument naming the run, round or format at fault.
Status ExportCommand(const ExportOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_EXPORT_COMMAND_H_
