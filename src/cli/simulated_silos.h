// The silos of a simulated federation (`fedsilo run`), as a JobRun reaches
// them (orchestrator/job_run.h): in this process (InProcessSilos), or each a
// `fedsilo silo` process of its own talking gRPC over mutual TLS on
// 127.0.0.1 (SiloProcesses, `--processes`).
#ifndef FEDSILO_CLI_SIMULATED_SILOS_H_
#define FEDSILO_CLI_SIMULATED_SILOS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/hostile_silo.h"
#include "cli/local_federation.h"
#include "core/busy_clock.h"
#include "ml/partitioner.h"
#include "ml/sandbox.h"
#include "orchestrator/job_run.h"
#include "silo/privacy_guard.h"
#include "silo/silo_agent.h"
#include "silo/silo_runtime.h"

namespace fedsilo::cli {

struct SimulatedSiloOptions {
  std::string data_dir;  // where silos read built-in data sets and their own files
  // Every silo applies this privacy policy, its ledger in
  // <silos_dir>/<name>/privacy-ledger.json; empty: the defaults, with a
  // ledger in memory.
  std::string silo_policy;
  std::string silos_dir;
  bool quiet = false;
};

// Each silo a handler in this process. A built-in data set's silos train on
// their `parts` (one per silo, in the job's order); a catalog's silos read
// their own files, as silo processes would. With `attack`, the last
// `attackers` silos send corrupted updates.
class InProcessSilos : public orchestrator::SiloReach {
 public:
  // `sandbox` and `busy` must outlive the silos.
  InProcessSilos(SimulatedSiloOptions options, std::vector<ml::SiloData> parts,
                 const ml::Sandbox* sandbox, BusyClock* busy,
                 std::optional<Attack> attack = std::nullopt, int attackers = 0)
      : options_(std::move(options)),
        parts_(std::move(parts)),
        sandbox_(sandbox),
        busy_(busy),
        attack_(attack),
        attackers_(attackers) {}

  StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> Connect(
      const JobConfig& job, const tracking::RunDirectory& run_dir) override;

 private:
  StatusOr<transport::SiloHandler*> MakeSilo(const JobConfig& job, int index);

  SimulatedSiloOptions options_;
  std::vector<ml::SiloData> parts_;
  const ml::Sandbox* sandbox_;
  BusyClock* busy_;
  std::optional<Attack> attack_;
  int attackers_;
  std::vector<std::unique_ptr<silo::PrivacyGuard>> guards_;  // outlive the silos
  std::vector<std::unique_ptr<silo::SiloAgent>> agents_;
  std::vector<std::unique_ptr<silo::SiloRuntime>> runtimes_;
  std::vector<std::unique_ptr<HostileSilo>> hostile_;
};

// Each silo a process of its own (cli/local_federation.h), its log in the
// run's folder.
class SiloProcesses : public orchestrator::SiloReach {
 public:
  explicit SiloProcesses(SimulatedSiloOptions options) : options_(std::move(options)) {}

  StatusOr<std::vector<std::unique_ptr<transport::SiloConnection>>> Connect(
      const JobConfig& job, const tracking::RunDirectory& run_dir) override;
  std::string federation_ca_pem() const override {
    return federation_ != nullptr ? federation_->ca_pem() : std::string();
  }

 private:
  SimulatedSiloOptions options_;
  std::unique_ptr<LocalFederation> federation_;
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_SIMULATED_SILOS_H_
