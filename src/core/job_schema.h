// The job file's keys, written once. One table (job_schema.cc) gives each key
// its path, type, range, default, help, the job-schema version that brought
// it, and how it is read from YAML and written back; ParseJobConfig,
// JobConfigToYaml, `fedsilo validate --print`, `fedsilo validate --reference`
// and docs/job-reference.md all walk it. Rules that tie several keys together
// run after every key is read, in one validation step.
//
// Job-schema versions let an orchestrator and silos of different releases
// work together: a silo says which versions it reads, and the orchestrator
// writes each silo the job in one of them, leaving out keys the silo does not
// know while they keep their defaults (the silo then uses the same default),
// or refuses that silo, naming the key that needs the newer version.
#ifndef FEDSILO_CORE_JOB_SCHEMA_H_
#define FEDSILO_CORE_JOB_SCHEMA_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/job_config.h"
#include "core/status.h"

namespace fedsilo {

// The newest job schema this build reads and writes, and the oldest it can
// still write a job in (for a silo of an older release).
//   1  fedsilo 0.1
//   2  fedsilo 0.2: training.lr_decay
//   3  fedsilo 0.3: kind, vertical
inline constexpr int kJobSchemaVersion = 3;
inline constexpr int kOldestJobSchemaVersion = 1;

// The first release that reads job schema `schema` ("0.2.0"); "" for a
// schema this build does not know.
absl::string_view FirstReleaseReading(int schema);

// One key of the job file, as the reference shows it.
struct JobKeyInfo {
  std::string path;      // "training.rounds"
  int since = 1;         // the job-schema version that brought it
  std::string type;      // "integer", "number", "string", "bool", ...
  std::string fallback;  // the default, as Markdown
  std::string allowed;   // the range or the values, as Markdown
  std::string help;      // what it does, as Markdown
};

// Every key, in file order.
std::vector<JobKeyInfo> JobKeys();

// docs/job-reference.md: an introduction and the table of every key.
std::string JobReferenceMarkdown();

// The resolved job as YAML a reader of job schema `schema` understands: keys
// that came later are left out while they hold their defaults.
// FailedPrecondition naming the first key that does not (and the schema it
// needs); InvalidArgument for a schema this build cannot write.
StatusOr<std::string> JobConfigToYamlForSchema(const JobConfig& config, int schema);

// The oldest job schema that can carry `config` (1 unless it sets a newer
// key), and the key that needs it ("" for 1).
std::pair<int, std::string> OldestSchemaFor(const JobConfig& config);

// The job in the oldest schema that carries it: the text every release that
// reads that schema writes for this job. For digests that must not change
// when a later release adds a key (a silo's ledger pins its runs' jobs so).
std::string JobConfigToStableYaml(const JobConfig& config);

// ParseJobConfig as a reader of job schema `schema` would: keys that came
// later are unknown keys. (A silo advertising an older schema reads this way.)
StatusOr<JobConfig> ParseJobConfigOfSchema(absl::string_view yaml_text, absl::string_view source,
                                           int schema);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_JOB_SCHEMA_H_
