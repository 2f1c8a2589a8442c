#include "transport/versions.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/job_schema.h"
#include "core/version.h"

namespace fedsilo::transport {
namespace {

std::string Range(int low, int high) {
  return low == high ? absl::StrCat(low) : absl::StrCat(low, "–", high);
}

std::string Schemas(const std::vector<int>& schemas) { return absl::StrJoin(schemas, ", "); }

}  // namespace

PeerVersions OwnVersions() {
  PeerVersions own;
  own.release = FedsiloRelease();
  own.protocol_min = kOldestProtocolVersion;
  own.protocol_max = kProtocolVersion;
  for (int s = kOldestJobSchemaVersion; s <= kJobSchemaVersion; ++s) own.job_schemas.push_back(s);
  return own;
}

fedsilo::v1::SiloMessage MakeHello(const std::vector<std::string>& datasets,
                                   const std::vector<int>& job_schemas) {
  const PeerVersions own = OwnVersions();
  fedsilo::v1::SiloMessage m;
  fedsilo::v1::SiloHello* hello = m.mutable_hello();
  for (const std::string& d : datasets) hello->add_datasets(d);
  hello->set_version(own.release);
  hello->set_protocol_min(own.protocol_min);
  hello->set_protocol_max(own.protocol_max);
  for (int s : job_schemas.empty() ? own.job_schemas : job_schemas) hello->add_job_schemas(s);
  return m;
}

StatusOr<PeerVersions> VersionsOf(const fedsilo::v1::SiloHello& hello) {
  PeerVersions v;
  // The peer's own words, bound for logs and messages: printable, bounded.
  for (char c : hello.version().substr(0, 64)) v.release += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (v.release.empty()) v.release = "an unnamed release";
  // fedsilo 0.1 sent neither: it spoke protocol 1 and read job schema 1.
  v.protocol_min = static_cast<int>(std::min<uint32_t>(hello.protocol_min(), 1u << 20));
  v.protocol_max = static_cast<int>(std::min<uint32_t>(hello.protocol_max(), 1u << 20));
  if (v.protocol_min == 0 && v.protocol_max == 0) v.protocol_min = v.protocol_max = 1;
  if (v.protocol_min < 1 || v.protocol_min > v.protocol_max) {
    return absl::InvalidArgumentError(absl::StrCat("the hello's protocol range ", v.protocol_min,
                                                   "–", v.protocol_max, " is not a range"));
  }
  if (hello.job_schemas_size() > 64) {
    return absl::InvalidArgumentError("the hello lists more than 64 job schemas");
  }
  for (uint32_t s : hello.job_schemas()) {
    if (s < 1 || s > (1u << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("the hello lists job schema ", s));
    }
    v.job_schemas.push_back(static_cast<int>(s));
  }
  if (v.job_schemas.empty()) v.job_schemas = {1};
  std::sort(v.job_schemas.begin(), v.job_schemas.end());
  v.job_schemas.erase(std::unique(v.job_schemas.begin(), v.job_schemas.end()), v.job_schemas.end());
  return v;
}

StatusOr<Agreement> Negotiate(const std::string& silo_name, const PeerVersions& silo,
                              const PeerVersions& orchestrator) {
  const auto refuse = [&](absl::string_view what, const std::string& silo_has,
                          const std::string& orchestrator_has, bool silo_older) {
    return absl::FailedPreconditionError(absl::StrCat(
        "silo '", silo_name, "' runs ", silo.release, ", which ", what, " ", silo_has,
        "; this orchestrator runs ", orchestrator.release, ", which ", what, " ", orchestrator_has,
        ": upgrade ", silo_older ? absl::StrCat("silo '", silo_name, "'") : "the orchestrator"));
  };
  Agreement agreed;
  agreed.protocol = std::min(silo.protocol_max, orchestrator.protocol_max);
  if (agreed.protocol < std::max(silo.protocol_min, orchestrator.protocol_min)) {
    return refuse("speaks protocol", Range(silo.protocol_min, silo.protocol_max),
                  Range(orchestrator.protocol_min, orchestrator.protocol_max),
                  silo.protocol_max < orchestrator.protocol_min);
  }
  if (silo.job_schemas.empty() || orchestrator.job_schemas.empty()) {
    return absl::InvalidArgumentError("a peer that reads no job schema");
  }
  agreed.job_schema = 0;
  for (int s : silo.job_schemas) {
    if (std::count(orchestrator.job_schemas.begin(), orchestrator.job_schemas.end(), s) > 0) {
      agreed.job_schema = std::max(agreed.job_schema, s);
    }
  }
  if (agreed.job_schema == 0) {
    return refuse("reads job schema", Schemas(silo.job_schemas), Schemas(orchestrator.job_schemas),
                  silo.job_schemas.back() < orchestrator.job_schemas.front());
  }
  return agreed;
}

StatusOr<std::string> JobForSilo(const JobConfig& job, const std::string& silo_name,
                                 const std::string& silo_release, int schema) {
  const auto [needed, key] = OldestSchemaFor(job);
  if (needed <= schema) return JobConfigToYamlForSchema(job, schema);
  const absl::string_view release = FirstReleaseReading(needed);
  return absl::FailedPreconditionError(
      absl::StrCat("silo '", silo_name, "' runs ", silo_release, ", which reads job schema ",
                   schema, "; this job sets ", key, ", which needs job schema ", needed,
                   ": upgrade silo '", silo_name, "' to fedsilo ", release.empty() ? "?" : release,
                   " or later, or leave ", key, " at its default"));
}

}  // namespace fedsilo::transport
