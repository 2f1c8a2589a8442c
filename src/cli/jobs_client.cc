#include "cli/jobs_client.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "secure/provisioner.h"
#include "transport/tls.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo::cli {

StatusOr<JobsClient> JobsClient::Connect(const UserOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(
      secure::Kit kit,
      secure::LoadKitOfKind(options.kit_dir, secure::ParticipantKind::kUser, "job commands"));
  FEDSILO_ASSIGN_OR_RETURN(transport::TlsFiles files, transport::LoadCheckedTlsFiles(kit));
  if (options.insecure) {
    spdlog::warn("--insecure: NO TLS; the orchestrator cannot verify who you are");
  }
  const std::string target = options.orchestrator.empty()
                                 ? absl::StrCat(kit.orchestrator_host, ":", kit.orchestrator_port)
                                 : options.orchestrator;
  // A long run's record (every metric of every silo and round) outgrows
  // gRPC's default 4 MB reply limit: 256 MiB holds about five million metrics.
  constexpr int kMaxReplyBytes = 256 << 20;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReplyBytes);
  auto channel = grpc::CreateCustomChannel(
      target, transport::ChannelCredentialsFor(files, options.insecure), args);
  JobsClient client(fedsilo::v1::Jobs::NewStub(channel), target, kit.name, options);
  client.diagnose_ = [files = std::make_shared<transport::TlsFiles>(std::move(files)), target,
                      insecure = options.insecure] {
    return transport::DiagnoseConnection(target, *files, insecure, std::chrono::seconds(5));
  };
  return client;
}

std::unique_ptr<grpc::ClientContext> JobsClient::Context() const {
  return ContextWithDeadline(std::chrono::seconds(options_.timeout_seconds));
}

std::unique_ptr<grpc::ClientContext> JobsClient::DownloadContext() const {
  return ContextWithDeadline(kDownloadDeadline);
}

std::unique_ptr<grpc::ClientContext> JobsClient::ContextWithDeadline(
    std::chrono::system_clock::duration deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + deadline);
  if (options_.insecure) {
    transport::AddInsecureIdentity(*context, name_, secure::ParticipantKind::kUser);
  }
  return context;
}

Status JobsClient::Check(const grpc::Status& status, const char* call) const {
  if (status.ok()) return absl::OkStatus();
  Status s = transport::FromGrpcStatus(status);
  if (absl::IsUnavailable(s) && diagnose_) {
    // gRPC says "Socket closed" for a refused handshake: look at what fails.
    const transport::ConnectionDiagnosis why = diagnose_();
    if (!why.Transient()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot connect to the orchestrator at ", target_, ": ", why.reason));
    }
    if (why.kind == transport::ConnectionDiagnosis::Kind::kNetwork) {
      return absl::UnavailableError(absl::StrCat("cannot reach the orchestrator at ", target_, " (",
                                                 call, "): ", why.reason));
    }
  }
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) {
    return Annotate(s, absl::StrCat("cannot reach the orchestrator at ", target_, " (", call, ")"));
  }
  return s;
}

}  // namespace fedsilo::cli
