#include "transport/orchestrator_service.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "transport/tls.h"

namespace fedsilo::transport {

using secure::ParticipantKind;

OrchestratorService::OrchestratorService(std::string ca_pem, SiloSessionListener* listener,
                                         Clock clock)
    : ca_pem_(std::move(ca_pem)), listener_(listener), clock_(std::move(clock)) {}

grpc::Status OrchestratorService::WhoAmI(grpc::ServerContext* context,
                                         const fedsilo::v1::WhoAmIRequest* /*request*/,
                                         fedsilo::v1::WhoAmIReply* reply) {
  StatusOr<secure::PeerIdentity> peer = AuthenticatePeer(
      *context, ca_pem_,
      {ParticipantKind::kSilo, ParticipantKind::kUser, ParticipantKind::kOrchestrator}, clock_());
  if (!peer.ok()) {
    spdlog::warn("refused {}: {}", context->peer(), std::string(peer.status().message()));
    return ToGrpcStatus(peer.status());
  }
  reply->set_name(peer->name);
  reply->set_kind(std::string(secure::ParticipantKindName(peer->kind)));
  reply->set_federation(peer->federation);
  reply->set_not_after_unix(std::chrono::system_clock::to_time_t(peer->not_after));
  reply->set_server_version("fedsilo 0.1.0");
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<fedsilo::v1::OrchestratorMessage, fedsilo::v1::SiloMessage>* stream) {
  StatusOr<secure::PeerIdentity> peer =
      AuthenticatePeer(*context, ca_pem_, {ParticipantKind::kSilo}, clock_());
  if (!peer.ok()) {
    spdlog::warn("refused silo stream from {}: {}", context->peer(),
                 std::string(peer.status().message()));
    return ToGrpcStatus(peer.status());
  }
  const std::string& silo = peer->name;
  fedsilo::v1::SiloMessage message;
  if (!stream->Read(&message)) return grpc::Status::OK;  // closed before saying hello
  if (message.body_case() != fedsilo::v1::SiloMessage::kHello) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on Connect must be SiloHello");
  }
  const uint64_t session = next_session_.fetch_add(1);
  const std::vector<std::string> datasets(message.hello().datasets().begin(),
                                          message.hello().datasets().end());
  listener_->OnConnected(silo, session, datasets);
  spdlog::info("silo '{}' connected from {} (session {})", silo, context->peer(), session);

  Status why;
  while (stream->Read(&message)) {
    switch (message.body_case()) {
      case fedsilo::v1::SiloMessage::kHeartbeat: {
        listener_->OnHeartbeat(silo, session);
        fedsilo::v1::OrchestratorMessage echo;
        echo.mutable_heartbeat()->set_unix_millis(message.heartbeat().unix_millis());
        if (!stream->Write(echo)) why = absl::UnavailableError("write failed");
        break;
      }
      default:
        // Results arrive only for tasks, which this endpoint has not sent.
        why = absl::InvalidArgumentError(absl::StrCat(
            "unexpected message (field ", message.body_case(), ") from silo '", silo, "'"));
        break;
    }
    if (!why.ok()) break;
  }
  if (why.ok())
    why = context->IsCancelled() ? absl::CancelledError("stream cancelled")
                                 : absl::UnavailableError("stream closed by the silo");
  listener_->OnDisconnected(silo, session, why);
  spdlog::info("silo '{}' disconnected (session {}): {}", silo, session,
               std::string(why.message()));
  return absl::IsInvalidArgument(why) ? ToGrpcStatus(why) : grpc::Status::OK;
}

StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& address, std::shared_ptr<grpc::ServerCredentials> credentials,
    grpc::Service* service) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, std::move(credentials), &port);
  builder.RegisterService(service);
  // Keepalive pings find silos whose connection died without a FIN.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve on ", address));
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(server), port));
}

GrpcServer::~GrpcServer() { Shutdown(); }

void GrpcServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
}

}  // namespace fedsilo::transport
