// DashboardServer: the web dashboard and its JSON API over a JobStore.
//   GET /                        the single-page dashboard (assets built in)
//   GET /api/info                {"source": <store path>}
//   GET /api/runs[?experiment=]  RunListJson
//   GET /api/runs/<run>          RunDetailJson (404 with {"error"} if unknown)
//   GET /api/runs/<run>/metrics  RunMetricsJson
//   GET /metrics                 Prometheus text format (when `metrics` is set)
// The page re-reads a run in progress every two seconds, so it follows a
// `fedsilo run` writing to the same store.
//
// Without `tls` it serves plain HTTP and no authentication (`fedsilo ui`,
// bound to 127.0.0.1). With `tls` (the orchestrator daemon) it serves HTTPS
// with the kit's certificate, requires a client certificate signed by the
// federation CA, and answers only participants of the `allowed` kinds (users):
// 403 naming the caller otherwise.
#ifndef FEDSILO_ORCHESTRATOR_DASHBOARD_H_
#define FEDSILO_ORCHESTRATOR_DASHBOARD_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "orchestrator/job_store.h"
#include "secure/certificate_authority.h"
#include "transport/tls.h"

namespace httplib {
class Server;
}

namespace fedsilo::orchestrator {

struct DashboardOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0 = any free port
  // Mutual TLS; must outlive the server when set.
  const transport::TlsFiles* tls = nullptr;
  // Certificates revoked by the operator (may be null).
  std::shared_ptr<const secure::RevocationList> revoked;
  std::vector<secure::ParticipantKind> allowed = {secure::ParticipantKind::kUser};
  std::function<std::chrono::system_clock::time_point()> clock = [] {
    return std::chrono::system_clock::now();
  };
  // The /metrics body; no /metrics when empty.
  std::function<std::string()> metrics;
};

class DashboardServer {
 public:
  // Listens in a thread of its own. `store` must outlive the server.
  // Unavailable naming the address when it cannot bind; InvalidArgument when
  // the TLS files do not load.
  static StatusOr<std::unique_ptr<DashboardServer>> Start(JobStore* store,
                                                          const DashboardOptions& options);
  ~DashboardServer();  // Stop()

  int port() const { return port_; }
  void Stop();

 private:
  DashboardServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_DASHBOARD_H_
