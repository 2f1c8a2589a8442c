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

namespace {
constexpr char kNameKey[] = "x-fedsilo-insecure-name";
constexpr char kKindKey[] = "x-fedsilo-insecure-kind";
}  // namespace

StatusOr<secure::PeerIdentity> PeerAuthenticator::Authenticate(
    const grpc::ServerContext& context,
    std::initializer_list<secure::ParticipantKind> allowed) const {
  if (!insecure) return AuthenticatePeer(context, ca_pem, allowed, clock());
  const auto& metadata = context.client_metadata();
  auto name = metadata.find(kNameKey);
  auto kind = metadata.find(kKindKey);
  if (name == metadata.end() || kind == metadata.end()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "peer ", context.peer(),
        " stated no identity; in --insecure mode the caller must run with --insecure too"));
  }
  secure::PeerIdentity peer;
  peer.name = std::string(name->second.data(), name->second.size());
  const std::string kind_name(kind->second.data(), kind->second.size());
  StatusOr<secure::ParticipantKind> parsed = secure::ParseParticipantKind(kind_name);
  if (!parsed.ok()) return absl::UnauthenticatedError(parsed.status().message());
  peer.kind = *parsed;
  if (std::find(allowed.begin(), allowed.end(), peer.kind) == allowed.end()) {
    return absl::PermissionDeniedError(absl::StrCat("'", peer.name, "' claims to be a ", kind_name,
                                                    "; this call needs another kind"));
  }
  peer.not_after = clock() + std::chrono::hours(24);
  return peer;
}

void AddInsecureIdentity(grpc::ClientContext& context, const std::string& name,
                         secure::ParticipantKind kind) {
  context.AddMetadata(kNameKey, name);
  context.AddMetadata(kKindKey, std::string(secure::ParticipantKindName(kind)));
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const TlsFiles& files,
                                                              bool insecure) {
  return insecure ? grpc::InsecureServerCredentials() : MakeServerCredentials(files);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const TlsFiles& files,
                                                                bool insecure) {
  return insecure ? grpc::InsecureChannelCredentials() : MakeChannelCredentials(files);
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
