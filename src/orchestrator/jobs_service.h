// JobsService: the user-facing gRPC API (proto/fedsilo/v1/jobs.proto) over a
// JobManager. Only callers with a user certificate are served; the caller's
// name (a job's owner) comes from that certificate.
//
// Thread safety: gRPC calls it from many threads; the JobManager is
// thread-safe and the service has no state of its own.
#ifndef FEDSILO_ORCHESTRATOR_JOBS_SERVICE_H_
#define FEDSILO_ORCHESTRATOR_JOBS_SERVICE_H_

#include "fedsilo/v1/jobs.grpc.pb.h"
#include "orchestrator/job_manager.h"
#include "transport/tls.h"

namespace fedsilo::orchestrator {

class JobsService final : public fedsilo::v1::Jobs::Service {
 public:
  // `manager` must outlive the service.
  JobsService(JobManager* manager, transport::PeerAuthenticator auth)
      : manager_(manager), auth_(std::move(auth)) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const fedsilo::v1::SubmitJobRequest* request,
                         fedsilo::v1::SubmitJobReply* reply) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const fedsilo::v1::ListJobsRequest* request,
                        fedsilo::v1::ListJobsReply* reply) override;
  grpc::Status GetJob(grpc::ServerContext* context, const fedsilo::v1::GetJobRequest* request,
                      fedsilo::v1::JobStatus* reply) override;
  grpc::Status GetLogs(grpc::ServerContext* context, const fedsilo::v1::GetLogsRequest* request,
                       fedsilo::v1::GetLogsReply* reply) override;
  grpc::Status AbortJob(grpc::ServerContext* context, const fedsilo::v1::AbortJobRequest* request,
                        fedsilo::v1::JobInfo* reply) override;
  grpc::Status DownloadModel(grpc::ServerContext* context,
                             const fedsilo::v1::DownloadModelRequest* request,
                             grpc::ServerWriter<fedsilo::v1::Chunk>* writer) override;
  grpc::Status ListRuns(grpc::ServerContext* context, const fedsilo::v1::ListRunsRequest* request,
                        fedsilo::v1::ListRunsReply* reply) override;
  grpc::Status GetRun(grpc::ServerContext* context, const fedsilo::v1::GetRunRequest* request,
                      fedsilo::v1::Run* reply) override;

 private:
  // The calling user, or an error status that the call returns.
  StatusOr<std::string> User(grpc::ServerContext* context, const char* call) const;

  JobManager* manager_;
  transport::PeerAuthenticator auth_;
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_JOBS_SERVICE_H_
