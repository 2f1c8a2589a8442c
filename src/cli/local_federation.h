// LocalFederation: `fedsilo run --processes` — a throwaway federation on this
// machine. It provisions a CA and kits, serves the orchestrator's gRPC
// endpoint on 127.0.0.1 with mutual TLS, and starts one `fedsilo silo`
// process per silo, each training on its share of the job's data set. On
// destruction the silo processes are stopped and the server shut down.
#ifndef FEDSILO_CLI_LOCAL_FEDERATION_H_
#define FEDSILO_CLI_LOCAL_FEDERATION_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/status.h"
#include "orchestrator/silo_registry.h"
#include "transport/orchestrator_service.h"
#include "transport/silo_connection.h"

namespace fedsilo::cli {

class LocalFederation {
 public:
  // Provisions into <dir>/kits, starts the endpoint and the silo processes
  // (logs in <dir>/silos/<name>.log) and waits up to `connect_timeout` for
  // every silo to connect; fails naming the silos that did not.
  // With `silo_policy`, each silo process applies it, its ledger in
  // <ledger_root>/<name>/privacy-ledger.json.
  static StatusOr<std::unique_ptr<LocalFederation>> Start(const JobConfig& job,
                                                          const std::string& dir,
                                                          const std::string& data_dir,
                                                          std::chrono::seconds connect_timeout,
                                                          const std::string& silo_policy = "",
                                                          const std::string& ledger_root = "");
  ~LocalFederation();

  // One connection per silo of the job, in federation.silos order.
  std::vector<std::unique_ptr<transport::SiloConnection>> Connections(
      std::chrono::milliseconds round_timeout);

  int port() const { return server_->port(); }
  // The federation CA's certificate (PEM) the silos' kits were issued by.
  const std::string& ca_pem() const { return ca_pem_; }

 private:
  LocalFederation() = default;
  void StopSilos();

  orchestrator::SiloRegistry registry_;
  std::unique_ptr<transport::OrchestratorService> service_;
  std::unique_ptr<transport::GrpcServer> server_;
  std::vector<std::string> silos_;
  std::vector<pid_t> children_;
  std::string ca_pem_;
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_LOCAL_FEDERATION_H_
