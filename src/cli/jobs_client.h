// JobsClient: one connection to the orchestrator's user API
// (proto/fedsilo/v1/jobs.proto) with a user kit, for the user commands and
// `fedsilo runs --kit`.
#ifndef FEDSILO_CLI_JOBS_CLIENT_H_
#define FEDSILO_CLI_JOBS_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "cli/user_options.h"
#include "core/status.h"
#include "fedsilo/v1/jobs.grpc.pb.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo::cli {

// A model's download takes as long as the network needs for it, not the
// moments every other call takes (UserOptions::timeout_seconds, 30 s).
inline constexpr std::chrono::hours kDownloadDeadline{24};

class JobsClient {
 public:
  // Loads the kit (InvalidArgument naming it when it is not a user kit).
  static StatusOr<JobsClient> Connect(const UserOptions& options);

  // A context with the call's deadline, options.timeout_seconds from now (and
  // the claimed identity in insecure mode).
  std::unique_ptr<grpc::ClientContext> Context() const;
  // The same for DownloadModel, with kDownloadDeadline instead.
  std::unique_ptr<grpc::ClientContext> DownloadContext() const;

  // Turns a failed call into an error that says where it went.
  Status Check(const grpc::Status& status, const char* call) const;

  fedsilo::v1::Jobs::Stub& stub() { return *stub_; }
  const std::string& target() const { return target_; }

 private:
  JobsClient(std::unique_ptr<fedsilo::v1::Jobs::Stub> stub, std::string target, std::string name,
             UserOptions options)
      : stub_(std::move(stub)),
        target_(std::move(target)),
        name_(std::move(name)),
        options_(std::move(options)) {}

  std::unique_ptr<grpc::ClientContext> ContextWithDeadline(
      std::chrono::system_clock::duration deadline) const;

  std::unique_ptr<fedsilo::v1::Jobs::Stub> stub_;
  std::string target_;
  std::string name_;
  // Says why a call found the orchestrator unavailable (DiagnoseConnection).
  std::function<transport::ConnectionDiagnosis()> diagnose_;
  UserOptions options_;
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_JOBS_CLIENT_H_
