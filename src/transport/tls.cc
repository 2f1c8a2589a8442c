#include "transport/tls.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"

namespace fedsilo::transport {

TlsFiles::~TlsFiles() { secure::WipeString(key_pem); }

StatusOr<TlsFiles> LoadTlsFiles(const secure::Kit& kit) {
  TlsFiles files;
  FEDSILO_ASSIGN_OR_RETURN(files.ca_pem, ReadFile(kit.ca_certificate_path));
  FEDSILO_ASSIGN_OR_RETURN(files.cert_pem, ReadFile(kit.certificate_path));
  FEDSILO_ASSIGN_OR_RETURN(files.key_pem, ReadFile(kit.private_key_path));
  return files;
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsFiles& files) {
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = files.ca_pem;
  options.pem_key_cert_pairs.push_back({files.key_pem, files.cert_pem});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TlsFiles& files) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = files.ca_pem;
  options.pem_private_key = files.key_pem;
  options.pem_cert_chain = files.cert_pem;
  return grpc::SslCredentials(options);
}

StatusOr<secure::PeerIdentity> AuthenticatePeer(
    const grpc::ServerContext& context, const std::string& ca_pem,
    std::initializer_list<secure::ParticipantKind> allowed,
    std::chrono::system_clock::time_point now) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  const std::vector<grpc::string_ref> pems =
      auth == nullptr ? std::vector<grpc::string_ref>{} : auth->FindPropertyValues("x509_pem_cert");
  if (pems.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("peer ", context.peer(), " presented no client certificate"));
  }
  const std::string pem(pems.front().data(), pems.front().size());
  FEDSILO_ASSIGN_OR_RETURN(secure::PeerIdentity peer, secure::VerifyCertificate(pem, ca_pem, now));
  if (std::find(allowed.begin(), allowed.end(), peer.kind) == allowed.end()) {
    std::vector<std::string> names;
    for (secure::ParticipantKind k : allowed) names.emplace_back(secure::ParticipantKindName(k));
    return absl::PermissionDeniedError(absl::StrCat(
        "'", peer.name, "' holds a ", secure::ParticipantKindName(peer.kind),
        " certificate; this call needs a ", absl::StrJoin(names, " or "), " certificate"));
  }
  return peer;
}

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace fedsilo::transport
