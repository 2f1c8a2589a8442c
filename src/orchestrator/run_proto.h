// Run records to and from their wire form (proto/fedsilo/v1/jobs.proto), for
// the Jobs service and the clients that read runs through it.
#ifndef FEDSILO_ORCHESTRATOR_RUN_PROTO_H_
#define FEDSILO_ORCHESTRATOR_RUN_PROTO_H_

#include "fedsilo/v1/jobs.pb.h"
#include "orchestrator/job_store.h"
#include "orchestrator/run_views.h"

namespace fedsilo::orchestrator {

// Everything but job_yaml and abort_requested.
void ToProto(const JobRecord& job, fedsilo::v1::JobInfo* info);
void ToProto(const RoundRecord& round, fedsilo::v1::RoundInfo* info);
void ToProto(const RunSummary& run, fedsilo::v1::RunSummary* out);
void ToProto(const RunData& run, fedsilo::v1::Run* out);

// An unknown state name reads as failed.
JobRecord FromProto(const fedsilo::v1::JobInfo& info);
RunSummary FromProto(const fedsilo::v1::RunSummary& run);
RunData FromProto(const fedsilo::v1::Run& run);

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_RUN_PROTO_H_
