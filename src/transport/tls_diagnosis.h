// Why a participant cannot talk to the orchestrator, in words it can act on.
// gRPC reports a refused TLS handshake as "Socket closed" or OpenSSL's
// "certificate verify failed"; DiagnoseConnection connects again with OpenSSL,
// as gRPC would, and names the first thing that fails: the network, this
// kit's certificate, the orchestrator's certificate (another federation's
// CA, expired, another name), or the other end speaking plaintext or TLS
// when this end does not.
//
// Thread safety: the functions are thread-safe.
#ifndef FEDSILO_TRANSPORT_TLS_DIAGNOSIS_H_
#define FEDSILO_TRANSPORT_TLS_DIAGNOSIS_H_

#include <chrono>
#include <string>

#include "core/status.h"
#include "transport/tls.h"

namespace fedsilo::transport {

struct ConnectionDiagnosis {
  enum class Kind {
    kReachable,    // TCP, TLS and HTTP/2 all answered: the failure was elsewhere
    kNetwork,      // nothing answers (refused, timed out, no route): worth retrying
    kCertificate,  // one side's certificate is refused: retrying will not help
    kProtocol,     // one end speaks TLS and the other plaintext
  };
  Kind kind = Kind::kNetwork;
  std::string reason;  // e.g. "the orchestrator's certificate is not from this kit's CA ..."
  // Whether retrying can help (kNetwork and kReachable).
  bool Transient() const { return kind == Kind::kNetwork || kind == Kind::kReachable; }
};

// InvalidArgument naming `certificate_path` when this kit's own certificate
// has expired, is not yet valid, or is not from the kit's CA, at `now`.
Status CheckOwnCertificate(const TlsFiles& files, const std::string& certificate_path,
                           std::chrono::system_clock::time_point now);

// The kit's TLS files, once its own certificate is checked (above) now:
// what every command that connects or serves starts from.
StatusOr<TlsFiles> LoadCheckedTlsFiles(const secure::Kit& kit);

// Connects to `target` ("host:port") the way the kit would -- plaintext with
// `insecure`, otherwise TLS with the kit's certificate, checking the
// orchestrator's against the kit's CA and `host` -- and says what fails.
// Each step waits at most `timeout`.
ConnectionDiagnosis DiagnoseConnection(const std::string& target, const TlsFiles& files,
                                       bool insecure, std::chrono::milliseconds timeout);

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_TLS_DIAGNOSIS_H_
