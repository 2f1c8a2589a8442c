#include "tls_push.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/subprocess.h"
#include "secure/provisioner.h"

namespace fedsilo::bench {
namespace {

constexpr size_t kPiece = 1 << 20;

struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using Ctx = std::unique_ptr<SSL_CTX, CtxFree>;
using Ssl = std::unique_ptr<SSL, SslFree>;

std::string OpenSslError() {
  char buf[256];
  ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
  return buf;
}

// A TLS 1.3 context with the kit's certificate that requires and verifies the
// peer's against the kit's CA, as the gRPC endpoint does.
StatusOr<Ctx> MakeContext(const std::string& kit_dir, bool server) {
  FEDSILO_ASSIGN_OR_RETURN(secure::Kit kit, secure::LoadKit(kit_dir));
  Ctx ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (ctx == nullptr || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx.get(), kit.certificate_path.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), kit.private_key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx.get(), kit.ca_certificate_path.c_str(), nullptr) != 1) {
    return absl::InternalError(absl::StrCat(kit_dir, ": TLS setup: ", OpenSslError()));
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

bool WriteAll(SSL* ssl, const std::string& piece, uint64_t bytes) {
  while (bytes > 0) {
    const int n = static_cast<int>(std::min<uint64_t>(bytes, piece.size()));
    const int w = SSL_write(ssl, piece.data(), n);
    if (w <= 0) return false;
    bytes -= static_cast<uint64_t>(w);
  }
  return true;
}

bool ReadAll(SSL* ssl, std::string& buffer, uint64_t bytes) {
  while (bytes > 0) {
    const int n = static_cast<int>(std::min<uint64_t>(bytes, buffer.size()));
    const int r = SSL_read(ssl, buffer.data(), n);
    if (r <= 0) return false;
    bytes -= static_cast<uint64_t>(r);
  }
  return true;
}

}  // namespace

StatusOr<std::vector<double>> MeasureTlsPush(const std::string& orchestrator_kit,
                                             const std::vector<std::string>& silo_kits,
                                             uint64_t bytes, int repeats) {
  FEDSILO_ASSIGN_OR_RETURN(Ctx ctx, MakeContext(orchestrator_kit, true));
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 128) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (listener >= 0) close(listener);
    return absl::UnavailableError("tls push: cannot listen on 127.0.0.1");
  }
  const int port = ntohs(addr.sin_port);
  std::vector<pid_t> children;
  for (const std::string& kit : silo_kits) {
    auto pid = SpawnProcess(
        "/proc/self/exe",
        {"fedsilo-bench", "tls-push-client", "--kit", kit, "--port", std::to_string(port),
         "--bytes", std::to_string(bytes), "--repeats", std::to_string(repeats)},
        "");
    if (pid.ok()) children.push_back(*pid);
  }
  auto finish = [&](Status s) -> Status {
    close(listener);
    for (pid_t pid : children) StopProcess(pid, SIGTERM, std::chrono::seconds(5));
    return s;
  };
  if (children.size() != silo_kits.size()) return finish(absl::InternalError("spawn failed"));

  std::vector<Ssl> conns;
  std::vector<int> fds;
  for (size_t i = 0; i < silo_kits.size(); ++i) {
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return finish(absl::UnavailableError("tls push: accept failed"));
    Ssl ssl(SSL_new(ctx.get()));
    SSL_set_fd(ssl.get(), fd);
    if (SSL_accept(ssl.get()) != 1) {
      close(fd);
      return finish(absl::UnavailableError(absl::StrCat("tls push: handshake: ", OpenSslError())));
    }
    conns.push_back(std::move(ssl));
    fds.push_back(fd);
  }
  std::vector<double> seconds;
  const std::string piece(kPiece, '\x5a');
  Status failed;
  for (int r = 0; r < repeats && failed.ok(); ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    std::vector<char> ok(conns.size(), 0);
    for (size_t i = 0; i < conns.size(); ++i) {
      threads.emplace_back([&, i] {
        std::string buffer(kPiece, '\0');
        ok[i] = WriteAll(conns[i].get(), piece, bytes) && ReadAll(conns[i].get(), buffer, bytes);
      });
    }
    for (std::thread& t : threads) t.join();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    for (char c : ok) {
      if (!c) failed = absl::UnavailableError("tls push: a connection broke");
    }
  }
  for (size_t i = 0; i < conns.size(); ++i) {
    SSL_shutdown(conns[i].get());
    conns[i].reset();
    close(fds[i]);
  }
  FEDSILO_RETURN_IF_ERROR(finish(failed));
  return seconds;
}

int RunTlsPushClient(const std::string& kit_dir, int port, uint64_t bytes, int repeats) {
  StatusOr<Ctx> ctx = MakeContext(kit_dir, false);
  if (!ctx.ok()) return 2;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return 1;
  Ssl ssl(SSL_new(ctx->get()));
  SSL_set_fd(ssl.get(), fd);
  if (SSL_connect(ssl.get()) != 1) return 1;
  std::string buffer(kPiece, '\0');
  for (int r = 0; r < repeats; ++r) {
    if (!ReadAll(ssl.get(), buffer, bytes) || !WriteAll(ssl.get(), buffer, bytes)) return 1;
  }
  SSL_shutdown(ssl.get());
  close(fd);
  return 0;
}

}  // namespace fedsilo::bench
