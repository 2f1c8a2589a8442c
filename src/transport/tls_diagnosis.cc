#include "transport/tls_diagnosis.h"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/unix_time.h"
#include "secure/certificate_authority.h"

namespace fedsilo::transport {
namespace {

using Kind = ConnectionDiagnosis::Kind;

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<SSL_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;

// The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client
// sends first; a gRPC server answers with its own SETTINGS frame.
constexpr char kHttp2Preface[] =
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
constexpr size_t kHttp2PrefaceSize = sizeof(kHttp2Preface) - 1;

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// While it lives, a write to a connection the other end closed fails with
// EPIPE instead of killing the process with SIGPIPE (OpenSSL writes with
// write(2), which has no MSG_NOSIGNAL).
class NoSigpipe {
 public:
  NoSigpipe() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~NoSigpipe() {
    if (!was_pending_) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

// "host:port" (or "[v6]:port", with an optional "dns:///") -> parts.
bool SplitTarget(std::string target, std::string* host, std::string* port) {
  if (absl::StartsWith(target, "dns:///")) target = target.substr(7);
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == target.size()) return false;
  *host = target.substr(0, colon);
  *port = target.substr(colon + 1);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return true;
}

// A TCP connection to host:port within `timeout`, or why not.
StatusOr<Socket> Dial(const std::string& host, const std::string& port,
                      std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int e = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); e != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve '", host, "': ", gai_strerror(e)));
  }
  std::unique_ptr<addrinfo, Deleter<freeaddrinfo>> list(found);
  std::string last = "no address";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Socket s(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (s.fd() < 0) continue;
    const int flags = fcntl(s.fd(), F_GETFL);
    fcntl(s.fd(), F_SETFL, flags | O_NONBLOCK);
    int rc = connect(s.fd(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{s.fd(), POLLOUT, 0};
      rc = poll(&p, 1, static_cast<int>(timeout.count()));
      if (rc == 0) {
        last = "timed out";
        continue;
      }
      int error = 0;
      socklen_t size = sizeof(error);
      getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &error, &size);
      if (error != 0) {
        last = std::strerror(error);
        continue;
      }
      rc = 0;
    } else if (rc != 0) {
      last = std::strerror(errno);
      continue;
    }
    fcntl(s.fd(), F_SETFL, flags);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    setsockopt(s.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return s;
  }
  return absl::UnavailableError(absl::StrCat("cannot reach ", host, ":", port, " (", last, ")"));
}

std::string OpenSslReason() {
  const unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "";
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "";
}

std::string ToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (cert == nullptr || !PEM_write_bio_X509(bio.get(), cert)) return "";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// The DNS names and IP addresses a certificate is for.
std::string NamesOf(X509* cert) {
  std::vector<std::string> names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
    if (n->type == GEN_DNS) {
      names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                         static_cast<size_t>(ASN1_STRING_length(n->d.dNSName)));
    } else if (n->type == GEN_IPADD && ASN1_STRING_length(n->d.iPAddress) == 4) {
      const unsigned char* ip = ASN1_STRING_get0_data(n->d.iPAddress);
      names.push_back(absl::StrCat(ip[0], ".", ip[1], ".", ip[2], ".", ip[3]));
    }
  }
  GENERAL_NAMES_free(sans);
  // (Names of a certificate that did not verify: escaped for the terminal.)
  return names.empty() ? "none" : secure::ShownName(absl::StrJoin(names, ", "));
}

// What the orchestrator's certificate `cert` failed on (`result` from
// SSL_get_verify_result), against this kit of `federation`.
std::string ServerCertificateProblem(long result, X509* cert, const std::string& host,
                                     const std::string& federation) {
  std::string theirs;
  secure::CertificateSummary summary;
  if (cert != nullptr) {
    StatusOr<secure::CertificateSummary> s = secure::DescribeCertificate(ToPem(cert));
    if (s.ok()) summary = *s;
    theirs = secure::ShownName(summary.peer.federation);
  }
  switch (result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return absl::StrCat("the orchestrator's certificate does not name '", host,
                          "' (it names: ", cert != nullptr ? NamesOf(cert) : "?",
                          "); dial one of those names (--orchestrator HOST:PORT)");
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return absl::StrCat("the orchestrator's certificate expired on ",
                          UtcTime(summary.peer.not_after),
                          "; its operator must issue it a new kit");
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return absl::StrCat("the orchestrator's certificate is valid only from ",
                          UtcTime(summary.peer.not_before), " (is a clock wrong?)");
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      if (theirs == federation) {
        return absl::StrCat(
            "the orchestrator's certificate is not from this kit's CA, though "
            "both name federation '",
            federation,
            "' (was the federation provisioned again? ask its operator for a "
            "kit of the current CA)");
      }
      return absl::StrCat(
          "the orchestrator's certificate is not from this kit's CA: it is of "
          "federation '",
          theirs, "', this kit of federation '", federation,
          "' (another federation's kit, or the wrong address?)");
    default:
      return absl::StrCat("the orchestrator's certificate does not verify: ",
                          X509_verify_cert_error_string(result));
  }
}

ConnectionDiagnosis Plaintext(Socket socket, const std::string& target) {
  // A TLS server answers an HTTP/2 preface with an alert record (0x15) or by
  // closing; a gRPC server with a SETTINGS frame (type 4).
  if (send(socket.fd(), kHttp2Preface, kHttp2PrefaceSize, MSG_NOSIGNAL) !=
      static_cast<ssize_t>(kHttp2PrefaceSize)) {
    return {Kind::kNetwork, absl::StrCat("cannot write to ", target)};
  }
  unsigned char head[16];
  const ssize_t n = recv(socket.fd(), head, sizeof(head), 0);
  if (n >= 4 && head[3] == 0x04) return {Kind::kReachable, "the orchestrator answers"};
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return {Kind::kNetwork, absl::StrCat(target, " does not answer")};
  }
  return {Kind::kProtocol,
          absl::StrCat("the orchestrator at ", target,
                       " speaks TLS and this end runs --insecure (plaintext): drop --insecure, "
                       "or start the orchestrator with --insecure too")};
}

}  // namespace

Status CheckOwnCertificate(const TlsFiles& files, const std::string& certificate_path,
                           std::chrono::system_clock::time_point now) {
  StatusOr<secure::CertificateSummary> mine = secure::DescribeCertificate(files.cert_pem);
  if (!mine.ok()) return Annotate(mine.status(), certificate_path);
  if (now > mine->peer.not_after) {
    // Silos' and users' kits are issued one by one; the orchestrator's only
    // with the federation's.
    const bool orchestrator =
        mine->kind_known && mine->peer.kind == secure::ParticipantKind::kOrchestrator;
    return absl::InvalidArgumentError(absl::StrCat(
        certificate_path, ": this kit's certificate expired on ", UtcTime(mine->peer.not_after),
        "; ask the federation operator for a new kit",
        orchestrator
            ? ""
            : absl::StrCat(" (`fedsilo provision add-",
                           mine->kind_known ? secure::ParticipantKindName(mine->peer.kind) : "silo",
                           " NAME`)")));
  }
  if (now < mine->peer.not_before) {
    return absl::InvalidArgumentError(
        absl::StrCat(certificate_path, ": this kit's certificate is valid only from ",
                     UtcTime(mine->peer.not_before), " (is this machine's clock wrong?)"));
  }
  StatusOr<secure::PeerIdentity> verified =
      secure::VerifyCertificate(files.cert_pem, files.ca_pem, now);
  if (!verified.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        certificate_path, ": this kit's certificate is not from the kit's CA (ca.crt): ",
        verified.status().message()));
  }
  return absl::OkStatus();
}

StatusOr<TlsFiles> LoadCheckedTlsFiles(const secure::Kit& kit) {
  FEDSILO_ASSIGN_OR_RETURN(TlsFiles files, LoadTlsFiles(kit));
  FEDSILO_RETURN_IF_ERROR(
      CheckOwnCertificate(files, kit.certificate_path, std::chrono::system_clock::now()));
  return files;
}

ConnectionDiagnosis DiagnoseConnection(const std::string& target, const TlsFiles& files,
                                       bool insecure, std::chrono::milliseconds timeout) {
  std::string host, port;
  if (!SplitTarget(target, &host, &port)) {
    return {Kind::kNetwork, absl::StrCat("'", target, "' is not HOST:PORT")};
  }
  StatusOr<Socket> socket = Dial(host, port, timeout);
  if (!socket.ok()) return {Kind::kNetwork, std::string(socket.status().message())};
  if (insecure) return Plaintext(*std::move(socket), target);
  const NoSigpipe no_sigpipe;

  std::string federation;
  if (auto mine = secure::DescribeCertificate(files.cert_pem); mine.ok()) {
    federation = mine->peer.federation;
  }
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) return {Kind::kNetwork, "OpenSSL: cannot create a context"};
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  BioPtr ca_bio(BIO_new_mem_buf(files.ca_pem.data(), static_cast<int>(files.ca_pem.size())));
  CertPtr ca(PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr));
  BioPtr cert_bio(BIO_new_mem_buf(files.cert_pem.data(), static_cast<int>(files.cert_pem.size())));
  CertPtr cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  BioPtr key_bio(BIO_new_mem_buf(files.key_pem.data(), static_cast<int>(files.key_pem.size())));
  KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (ca == nullptr || cert == nullptr || key == nullptr ||
      X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca.get()) != 1 ||
      SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1) {
    ERR_clear_error();
    return {Kind::kCertificate, "this kit's certificate, key or CA does not load"};
  }
  // A refused orchestrator certificate ends the handshake before this kit's
  // certificate is sent; the callback keeps theirs to say what it is.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, [](int ok, X509_STORE_CTX* store) {
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* seen = static_cast<CertPtr*>(SSL_get_app_data(ssl));
    X509* leaf = X509_STORE_CTX_get0_cert(store);
    if (seen != nullptr && *seen == nullptr && leaf != nullptr && X509_up_ref(leaf) == 1) {
      seen->reset(leaf);
    }
    return ok;
  });
  CertPtr theirs;
  SslPtr ssl(SSL_new(ctx.get()));
  SSL_set_app_data(ssl.get(), &theirs);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof(kAlpn));
  SSL_set_tlsext_host_name(ssl.get(), host.c_str());
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) {
    ERR_clear_error();
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  }
  SSL_set_fd(ssl.get(), socket->fd());
  const bool connected = SSL_connect(ssl.get()) == 1;
  const std::string reason = OpenSslReason();
  if (const long verify = SSL_get_verify_result(ssl.get()); verify != X509_V_OK) {
    return {Kind::kCertificate, ServerCertificateProblem(verify, theirs.get(), host, federation)};
  }
  if (!connected) {
    if (absl::StrContains(reason, "wrong version number") ||
        absl::StrContains(reason, "packet length too long") ||
        absl::StrContains(reason, "record layer failure") ||
        absl::StrContains(reason, "http request")) {
      return {Kind::kProtocol,
              absl::StrCat("the orchestrator at ", target,
                           " does not speak TLS (was it started with --insecure?)")};
    }
    if (absl::StrContains(reason, "alert")) {
      return {Kind::kCertificate,
              absl::StrCat("the orchestrator refused this kit's certificate (", reason,
                           "): revoked, expired by its clock, or of another federation; the "
                           "orchestrator's log says which")};
    }
    return {Kind::kNetwork, absl::StrCat("the TLS handshake with ", target, " failed",
                                         reason.empty() ? "" : absl::StrCat(": ", reason))};
  }
  // TLS 1.3: the server checks the client's certificate after the client has
  // finished; its verdict comes with the first bytes it sends.
  if (SSL_write(ssl.get(), kHttp2Preface, static_cast<int>(kHttp2PrefaceSize)) <= 0) {
    ERR_clear_error();
  }
  unsigned char head[16];
  const int n = SSL_read(ssl.get(), head, sizeof(head));
  if (n > 0) return {Kind::kReachable, "the orchestrator answers"};
  const int error = SSL_get_error(ssl.get(), n);
  const std::string refusal = OpenSslReason();
  if (error == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return {Kind::kNetwork, absl::StrCat(target, " does not answer")};
  }
  return {Kind::kCertificate,
          absl::StrCat("the orchestrator refused this kit's certificate",
                       refusal.empty() ? "" : absl::StrCat(" (", refusal, ")"),
                       ": it is revoked, expired by the orchestrator's clock, or not of the "
                       "orchestrator's federation; the orchestrator's log says which")};
}

}  // namespace fedsilo::transport
