// `fedsilo validate JOB [--print]` and `fedsilo validate --reference`.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "core/job_schema.h"

namespace fedsilo::cli {
namespace {

struct ValidateOptions {
  std::string job_path;
  std::vector<std::string> sets;
  bool print = false;
  bool reference = false;
};

Status Validate(const ValidateOptions& options) {
  if (options.reference) {
    std::printf("%s", JobReferenceMarkdown().c_str());
    return absl::OkStatus();
  }
  FEDSILO_ASSIGN_OR_RETURN(JobConfig job, LoadJob(options.job_path, options.sets));
  if (options.print) {
    std::printf("%s", JobConfigToYaml(job).c_str());
  } else {
    std::printf("%s: valid (%s, %zu silos, %s, %d rounds)\n", options.job_path.c_str(),
                job.data.dataset.c_str(), job.federation.silos.size(),
                std::string(ModelKindName(job.model.kind)).c_str(), job.training.rounds);
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterValidateCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<ValidateOptions>();
  CLI::App* validate =
      app.add_subcommand("validate", "Check a job file and report the first error");
  CLI::Option* job = validate->add_option("job", options->job_path, "Job file (YAML)");
  validate->add_option("--set", options->sets, "Override a job key, as for `run`");
  validate->add_flag("--print", options->print,
                     "Print the resolved job (every key, defaults filled in)");
  validate
      ->add_flag("--reference", options->reference,
                 "Print every job key, its type, default, range and meaning (Markdown: "
                 "docs/job-reference.md)")
      ->excludes(job);
  validate->callback([options, job] {
    if (!options->reference && job->count() == 0) throw CLI::RequiredError("job (or --reference)");
  });
  commands.Add(validate, kNoSetUp, [options] { return Validate(*options); });
}

}  // namespace fedsilo::cli
