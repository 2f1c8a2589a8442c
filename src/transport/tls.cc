#include "transport/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"
#include "core/unix_time.h"
#include "transport/grpc_logging.h"

namespace fedsilo::transport {

TlsFiles::~TlsFiles() { secure::WipeString(key_pem); }

StatusOr<TlsFiles> LoadTlsFiles(const secure::Kit& kit) {
  TlsFiles files;
  FEDSILO_ASSIGN_OR_RETURN(files.ca_pem, ReadFile(kit.ca_certificate_path));
  FEDSILO_ASSIGN_OR_RETURN(files.cert_pem, ReadFile(kit.certificate_path));
  FEDSILO_ASSIGN_OR_RETURN(files.key_pem, ReadFile(kit.private_key_path));
  return files;
}

namespace {

// Whom a certificate claims to be, for a log line about a refused one.
std::string Claimed(const std::string& pem) {
  StatusOr<secure::CertificateSummary> s = secure::DescribeCertificate(pem);
  if (!s.ok()) return "an unreadable certificate";
  return absl::StrCat("'", secure::ShownName(s->peer.name), "' (",
                      s->kind_known ? secure::ParticipantKindName(s->peer.kind) : "no kind",
                      " of federation '", secure::ShownName(s->peer.federation), "', serial ",
                      secure::ShownName(s->peer.serial), ")");
}

// PermissionDenied if `peer` is revoked (`revoked` may be null).
Status CheckRevoked(const secure::PeerIdentity& peer, const secure::RevocationList* revoked) {
  return revoked != nullptr ? revoked->Check(peer) : absl::OkStatus();
}

// Checks a client's certificate during the handshake (gRPC only makes sure
// that the client holds the certificate's key).
class HandshakeVerifier : public grpc::experimental::ExternalCertificateVerifier {
 public:
  HandshakeVerifier(std::string ca_pem, std::shared_ptr<const secure::RevocationList> revoked)
      : ca_pem_(std::move(ca_pem)), revoked_(std::move(revoked)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/, grpc::Status* sync_status) override {
    const std::string pem(request->peer_cert().data(), request->peer_cert().size());
    Status verdict = absl::UnauthenticatedError("no client certificate");
    if (!pem.empty()) {
      StatusOr<secure::PeerIdentity> peer =
          secure::VerifyCertificate(pem, ca_pem_, std::chrono::system_clock::now());
      verdict = peer.ok() ? CheckRevoked(*peer, revoked_.get()) : peer.status();
    }
    if (!verdict.ok()) {
      // This runs on the thread that read the client's handshake.
      LogRefusedConnection(absl::StrCat(
          "refused a TLS handshake from ", PeerOfLastIo(), ", ",
          pem.empty() ? "a client without a certificate" : Claimed(pem), ": ", verdict.message()));
    }
    *sync_status = ToGrpcStatus(verdict);
    return true;  // done synchronously
  }
  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest* /*request*/) override {}

 private:
  const std::string ca_pem_;
  const std::shared_ptr<const secure::RevocationList> revoked_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsFiles& files, std::shared_ptr<const secure::RevocationList> revoked) {
  auto provider = std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
      files.ca_pem,
      std::vector<grpc::experimental::IdentityKeyCertPair>{{files.key_pem, files.cert_pem}});
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  // The chain, dates and revocation are checked by HandshakeVerifier, which
  // says why it refuses.
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  options.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<HandshakeVerifier>(
          files.ca_pem, std::move(revoked)));
  return grpc::experimental::TlsServerCredentials(options);
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
    std::chrono::system_clock::time_point now, const secure::RevocationList* revoked) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  const std::vector<grpc::string_ref> pems =
      auth == nullptr ? std::vector<grpc::string_ref>{} : auth->FindPropertyValues("x509_pem_cert");
  if (pems.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("peer ", context.peer(), " presented no client certificate"));
  }
  const std::string pem(pems.front().data(), pems.front().size());
  FEDSILO_ASSIGN_OR_RETURN(secure::PeerIdentity peer, secure::VerifyCertificate(pem, ca_pem, now));
  FEDSILO_RETURN_IF_ERROR(CheckRevoked(peer, revoked));
  if (std::find(allowed.begin(), allowed.end(), peer.kind) == allowed.end()) {
    // "a silo", "an orchestrator"
    auto article = [](secure::ParticipantKind k) {
      return k == secure::ParticipantKind::kOrchestrator ? "an " : "a ";
    };
    std::vector<std::string> names;
    for (secure::ParticipantKind k : allowed) names.emplace_back(secure::ParticipantKindName(k));
    return absl::PermissionDeniedError(
        absl::StrCat("'", peer.name, "' holds ", article(peer.kind),
                     secure::ParticipantKindName(peer.kind), " certificate; this call needs ",
                     article(*allowed.begin()), absl::StrJoin(names, " or "), " certificate"));
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
  if (!insecure) return AuthenticatePeer(context, ca_pem, allowed, clock(), revoked.get());
  const auto& metadata = context.client_metadata();
  auto name = metadata.find(kNameKey);
  auto kind = metadata.find(kKindKey);
  if (name == metadata.end() || kind == metadata.end()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "peer ", context.peer(),
        " stated no identity; in --insecure mode the caller must run with --insecure too"));
  }
  secure::PeerIdentity peer;
  // Claims nothing checks: escaped, so that they cannot write log lines.
  peer.name = secure::ShownName(absl::string_view(name->second.data(), name->second.size()));
  const std::string kind_name =
      secure::ShownName(absl::string_view(kind->second.data(), kind->second.size()));
  StatusOr<secure::ParticipantKind> parsed = secure::ParseParticipantKind(kind_name);
  if (!parsed.ok()) return absl::UnauthenticatedError(parsed.status().message());
  peer.kind = *parsed;
  if (std::find(allowed.begin(), allowed.end(), peer.kind) == allowed.end()) {
    return absl::PermissionDeniedError(absl::StrCat("'", peer.name, "' claims the kind '",
                                                    kind_name, "'; this call needs another kind"));
  }
  peer.not_after = clock() + std::chrono::hours(24);
  return peer;
}

Status PeerAuthenticator::StillValid(const secure::PeerIdentity& peer) const {
  if (insecure) return absl::OkStatus();
  if (clock() > peer.not_after) {
    return absl::PermissionDeniedError(
        absl::StrCat("the certificate of '", peer.name, "' expired on ", UtcTime(peer.not_after)));
  }
  return CheckRevoked(peer, revoked.get());
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
