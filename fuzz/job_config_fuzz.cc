// The job YAML a user submits: any text either parses into a job or is
// refused with an error; a job that parses writes back as YAML that parses
// to the same job (the orchestrator sends silos the written form).
#include "core/job_config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedsilo;
  if (size > 64 * 1024) return 0;
  StatusOr<JobConfig> job = ParseJobConfig(fuzz::Bytes(data, size), "fuzz.yaml");
  if (!job.ok()) {
    FEDSILO_FUZZ_CHECK(!job.status().message().empty());
    return 0;
  }
  const std::string yaml = JobConfigToYaml(*job);
  StatusOr<JobConfig> again = ParseJobConfig(yaml, "again.yaml");
  FEDSILO_FUZZ_CHECK(again.ok());
  FEDSILO_FUZZ_CHECK(JobConfigToYaml(*again) == yaml);
  return 0;
}
