// Which versions an orchestrator and a silo of possibly different releases
// use with each other. Organisations upgrade on their own schedules, so each
// end says what it speaks and reads, and the orchestrator picks the newest
// both know, or refuses the silo with a reason that names both ends' releases
// and which one to upgrade.
//
// Two versions are negotiated:
//  - the protocol (this file's kProtocolVersion): the messages' meaning. An
//    addition old peers can ignore (a new field) does not change it; a change
//    they would misread does, and the package (fedsilo.v1) changes only when
//    no release can speak both.
//  - the job schema (core/job_schema.h): which keys a task's job may hold.
//    The orchestrator writes each silo's job in the newest schema the silo
//    reads; a job that needs a newer one is refused for that silo alone.
#ifndef FEDSILO_TRANSPORT_VERSIONS_H_
#define FEDSILO_TRANSPORT_VERSIONS_H_

#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/status.h"
#include "fedsilo/v1/federation.pb.h"

namespace fedsilo::transport {

// The protocol versions this build speaks.
// 2 (fedsilo 0.4.0): vertical jobs' steps (VerticalStep).
inline constexpr int kProtocolVersion = 2;
inline constexpr int kOldestProtocolVersion = 1;
// The protocol vertical jobs need, and the first release that speaks it.
inline constexpr int kVerticalProtocolVersion = 2;
inline constexpr char kVerticalRelease[] = "0.4.0";

// What one end says it runs, speaks and reads.
struct PeerVersions {
  std::string release;  // "fedsilo 0.2.0"
  int protocol_min = 1;
  int protocol_max = 1;
  std::vector<int> job_schemas;  // ascending
};

// This build's own.
PeerVersions OwnVersions();

// The hello a silo sends, with `job_schemas` (ascending; this build's when
// empty) and the datasets it offers.
fedsilo::v1::SiloMessage MakeHello(const std::vector<std::string>& datasets,
                                   const std::vector<int>& job_schemas = {});

// What a hello says. A field left out is read as fedsilo 0.1 sent it
// (protocol 1, job schema 1). InvalidArgument for a hello that contradicts
// itself (min above max, a schema below 1).
StatusOr<PeerVersions> VersionsOf(const fedsilo::v1::SiloHello& hello);

// What an orchestrator and a silo use with each other.
struct Agreement {
  int protocol = 1;
  int job_schema = 1;
};

// The newest protocol and job schema both `orchestrator` and `silo` know, or
// FailedPrecondition naming the silo, both releases and what to upgrade.
StatusOr<Agreement> Negotiate(const std::string& silo_name, const PeerVersions& silo,
                              const PeerVersions& orchestrator = OwnVersions());

// The job of a task for a silo that reads job schema `schema` (as
// Negotiate agreed), or FailedPrecondition naming the silo, its release, the
// key that needs a newer schema and the release to upgrade to.
StatusOr<std::string> JobForSilo(const JobConfig& job, const std::string& silo_name,
                                 const std::string& silo_release, int schema);

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_VERSIONS_H_
