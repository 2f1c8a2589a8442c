// SiloRegistry: which silos are connected to the orchestrator, since when,
// what dataset names they offer and when they were last heard from. Fed by
// the gRPC endpoint's session events. Thread-safe.
#ifndef FEDSILO_ORCHESTRATOR_SILO_REGISTRY_H_
#define FEDSILO_ORCHESTRATOR_SILO_REGISTRY_H_

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "transport/orchestrator_service.h"

namespace fedsilo::orchestrator {

struct SiloStatus {
  std::string name;
  bool connected = false;
  std::vector<std::string> datasets;
  std::chrono::system_clock::time_point last_seen;
  int sessions = 0;        // connections opened so far
  std::string last_error;  // why the last session ended
};

class SiloRegistry : public transport::SiloSessionListener {
 public:
  void OnConnected(const std::string& silo, uint64_t session,
                   const std::vector<std::string>& datasets) override;
  void OnHeartbeat(const std::string& silo, uint64_t session) override;
  void OnDisconnected(const std::string& silo, uint64_t session, const Status& why) override;

  // Every silo seen so far, by name.
  std::vector<SiloStatus> Snapshot() const;

 private:
  struct Entry {
    SiloStatus status;
    uint64_t session = 0;  // the current session
  };
  mutable Mutex mu_;
  std::map<std::string, Entry> silos_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_SILO_REGISTRY_H_
