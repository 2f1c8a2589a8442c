// DashboardServer: the web dashboard and its JSON API over a JobStore.
//   GET /                        the single-page dashboard (assets built in)
//   GET /api/info                {"source": <store path>}
//   GET /api/runs[?experiment=]  RunListJson
//   GET /api/runs/<run>          RunDetailJson (404 with {"error"} if unknown)
//   GET /api/runs/<run>/metrics  RunMetricsJson
// The page re-reads a run in progress every two seconds, so it follows a
// `fedsilo run` writing to the same store. Serves plain HTTP, without
// authentication: bind it to 127.0.0.1 (the default of `fedsilo ui`).
#ifndef FEDSILO_ORCHESTRATOR_DASHBOARD_H_
#define FEDSILO_ORCHESTRATOR_DASHBOARD_H_

#include <memory>
#include <string>
#include <thread>

#include "core/status.h"
#include "orchestrator/job_store.h"

namespace httplib {
class Server;
}

namespace fedsilo::orchestrator {

class DashboardServer {
 public:
  // Listens on host:port (0 = any free port) in a thread of its own.
  // `store` must outlive the server. Unavailable naming the address when it
  // cannot bind.
  static StatusOr<std::unique_ptr<DashboardServer>> Start(JobStore* store, const std::string& host,
                                                          int port);
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
