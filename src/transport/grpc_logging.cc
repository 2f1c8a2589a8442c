#include "transport/grpc_logging.h"

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "core/mutex.h"
#include "secure/certificate_authority.h"

namespace fedsilo::transport {
namespace {

thread_local std::string t_peer;  // the peer of this thread's last read or write

// gRPC's tcp tracer: "READ 0x55d0c8 (peer=ipv4:127.0.0.1:50712) error=OK",
// "WRITE 0x55d0c8 (peer=ipv4:127.0.0.1:50712)".
void NotePeer(absl::string_view line) {
  constexpr absl::string_view kPeer = "(peer=";
  const size_t at = line.find(kPeer);
  if (at == absl::string_view::npos) return;
  absl::string_view peer = line.substr(at + kPeer.size());
  peer = peer.substr(0, peer.find(')'));
  for (absl::string_view scheme : {"ipv4:", "ipv6:", "unix:"}) {
    if (absl::ConsumePrefix(&peer, scheme)) break;
  }
  t_peer.assign(peer.data(), peer.size());
}

// What a failed server-side handshake means, from OpenSSL's reason.
std::string HandshakeFailure(absl::string_view line) {
  if (absl::StrContains(line, "wrong version number") || absl::StrContains(line, "http request")) {
    return "it does not speak TLS (a client started with --insecure, or not fedsilo?)";
  }
  if (absl::StrContains(line, "peer did not return a certificate")) {
    return "it presented no certificate (fedsilo's servers require one from every client)";
  }
  if (absl::StrContains(line, "no shared cipher") ||
      absl::StrContains(line, "unsupported protocol")) {
    return "it has no TLS version or cipher in common with this server";
  }
  // "... error:0A000086:SSL routines::certificate verify failed." -> the reason.
  absl::string_view reason = line;
  const size_t at = reason.rfind("::");
  if (at != absl::string_view::npos) reason = reason.substr(at + 2);
  absl::ConsumeSuffix(&reason, ".");
  return absl::StrCat("its TLS handshake failed (", secure::ShownName(reason), ")");
}

// At most kBurst refused-connection lines a minute: a flood of connections
// must not flood the log. The rest are counted and reported once.
class RefusalLog {
 public:
  void Warn(const std::string& line) {
    const auto now = std::chrono::steady_clock::now();
    int dropped = 0;
    bool show;
    {
      MutexLock lock(&mu_);
      if (now - window_ > std::chrono::minutes(1)) {
        dropped = dropped_;
        dropped_ = shown_ = 0;
        window_ = now;
      }
      show = shown_ < kBurst;
      if (show) {
        ++shown_;
      } else {
        ++dropped_;
      }
    }
    if (dropped > 0) {
      spdlog::warn("{} more refused connections were not logged in the last minute", dropped);
    }
    if (show) spdlog::warn("{}", line);
  }

 private:
  static constexpr int kBurst = 20;
  Mutex mu_;
  std::chrono::steady_clock::time_point window_ ABSL_GUARDED_BY(mu_);
  int shown_ ABSL_GUARDED_BY(mu_) = 0;
  int dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

std::atomic<bool> g_server{false};

RefusalLog& Refusals() {
  static RefusalLog* refusals = new RefusalLog();  // never destroyed: gRPC's threads log late
  return *refusals;
}

void LogFunction(gpr_log_func_args* args) { HandleGrpcLogLine(args->severity, args->message); }

}  // namespace

void HandleGrpcLogLine(int severity, const char* message) {
  const absl::string_view line(message);
  if ((absl::StartsWith(line, "READ ") || absl::StartsWith(line, "WRITE ")) &&
      absl::StrContains(line, "(peer=")) {
    // The last I/O of this thread names the connection it works for, also
    // when a handshake goes on after a write.
    NotePeer(line);
    return;  // one per read or write: noise at any level
  }
  if (g_server.load() && severity < GPR_LOG_SEVERITY_ERROR) {
    // The tracer's other lines, and whatever else gRPC says below error
    // level now that a server asked for info (as it did not before).
    return;
  }
  if (g_server.load() && absl::StartsWith(line, "Handshake failed with fatal error")) {
    LogRefusedConnection(absl::StrCat("refused a connection from ", PeerOfLastIo(), ": ",
                                      HandshakeFailure(line)));
  }
  spdlog::debug("grpc: {}", message);
}

void RouteGrpcLogs(bool peer_addresses) {
  static std::once_flag routed;
  std::call_once(routed, [] { gpr_set_log_function(LogFunction); });
  if (peer_addresses && !g_server.exchange(true)) {
    // The tracer logs at info; only its READ and WRITE lines are used (PeerOfLastIo).
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_INFO);
    grpc_tracer_set_enabled("tcp", 1);
  }
}

std::string PeerOfLastIo() { return t_peer.empty() ? "an unknown address" : t_peer; }

void LogRefusedConnection(const std::string& line) { Refusals().Warn(line); }

}  // namespace fedsilo::transport
