// `fedsilo export RUN`: a recorded run's final model (or a kept checkpoint)
// as an .fsm file or, for model.torchscript jobs, as a TorchScript file that
// torch.jit.load reads. Reads the run store and run folders of --workdir (a
// `fedsilo run` work folder, or an orchestrator's state folder).
#ifndef FEDSILO_CLI_EXPORT_COMMAND_H_
#define FEDSILO_CLI_EXPORT_COMMAND_H_

#include <string>

#include "core/job_config.h"
#include "core/model_state_file.h"
#include "core/status.h"
#include "orchestrator/job_store.h"

namespace fedsilo::cli {

struct ExportOptions {
  std::string workdir = ".";
  std::string run;     // run id, unique prefix, or job id
  std::string format;  // "fsm" or "torchscript"; empty = torchscript for such jobs, else fsm
  int round = 0;       // 0 = the final model
  std::string out;     // required
  bool json = false;
};

// InvalidArgument naming the run, round or format at fault. An .fsm export
// carries the run's resolved job in its metadata ("job_yaml").
Status ExportCommand(const ExportOptions& options);

// A recorded run's record and resolved job. InvalidArgument naming the run
// or the work folder.
struct RunJob {
  orchestrator::JobRecord run;
  JobConfig job;
};
StatusOr<RunJob> LoadRunJob(const std::string& workdir, const std::string& run);

// A recorded run's model: its record, resolved job, the model file of
// `round` (0 = the final model) and, for model.torchscript jobs, the module
// file. InvalidArgument naming the run or round (and, for a vertical run,
// saying where its parts are).
struct RunModel {
  orchestrator::JobRecord run;
  JobConfig job;
  ModelFile model;
  std::string module;
};
StatusOr<RunModel> LoadRunModel(const std::string& workdir, const std::string& run, int round);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_EXPORT_COMMAND_H_
