// Mutual TLS for gRPC, built from a startup kit (see secure/provisioner.h):
// servers require and verify a client certificate signed by the federation
// CA; clients verify the server against the same CA. Identity is read from
// the verified certificate (AuthenticatePeer), never from a message field.
#ifndef FEDSILO_TRANSPORT_TLS_H_
#define FEDSILO_TRANSPORT_TLS_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/status.h"
#include "secure/certificate_authority.h"
#include "secure/provisioner.h"
#include "secure/revocation.h"

namespace fedsilo::transport {

// The PEM files of a kit. The key is wiped when the object goes away.
struct TlsFiles {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  ~TlsFiles();
};

// Reads the kit's CA certificate, certificate and key; errors name the file.
StatusOr<TlsFiles> LoadTlsFiles(const secure::Kit& kit);

// Server side: requires a client certificate and checks it during the TLS
// handshake -- issued by the CA, valid now, not revoked (`revoked` may be
// null) -- so that a refused certificate never reaches a call. Each refusal
// is logged with what the certificate claims (name, kind, federation,
// serial) and the reason.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsFiles& files, std::shared_ptr<const secure::RevocationList> revoked = nullptr);
// Client side: presents the kit's certificate and verifies the server's.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TlsFiles& files);

// The caller's verified identity. Unauthenticated when the call carries no
// client certificate; PermissionDenied when the certificate does not verify
// against `ca_pem` at `now`, is revoked (`revoked` may be null) or its kind is
// not in `allowed`.
StatusOr<secure::PeerIdentity> AuthenticatePeer(
    const grpc::ServerContext& context, const std::string& ca_pem,
    std::initializer_list<secure::ParticipantKind> allowed,
    std::chrono::system_clock::time_point now, const secure::RevocationList* revoked = nullptr);

// How a server learns who calls it: from the verified client certificate, or
// -- only when `insecure` was asked for by name (`--insecure`) -- from the
// name and kind the caller claims in call metadata (AddInsecureIdentity).
// Claims cannot be checked, which is why insecure mode warns loudly; it exists
// for debugging networks, never for data that matters.
struct PeerAuthenticator {
  std::string ca_pem;
  std::function<std::chrono::system_clock::time_point()> clock;
  bool insecure = false;
  std::shared_ptr<const secure::RevocationList> revoked;  // may be null

  StatusOr<secure::PeerIdentity> Authenticate(
      const grpc::ServerContext& context,
      std::initializer_list<secure::ParticipantKind> allowed) const;
  // For long-lived streams: PermissionDenied once `peer`'s certificate has
  // expired or been revoked since it was authenticated.
  Status StillValid(const secure::PeerIdentity& peer) const;
};

// Client side of insecure mode: states the kit's name and kind on a call.
void AddInsecureIdentity(grpc::ClientContext& context, const std::string& name,
                         secure::ParticipantKind kind);

// Credentials for a kit: mutual TLS, or plaintext when `insecure` (the caller
// has warned).
std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const TlsFiles& files, bool insecure);
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const TlsFiles& files,
                                                                bool insecure);

// Converts between absl and gRPC status codes, keeping the message.
grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_TLS_H_
