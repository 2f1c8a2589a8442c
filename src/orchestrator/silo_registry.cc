#include "orchestrator/silo_registry.h"

namespace fedsilo::orchestrator {

void SiloRegistry::OnConnected(const std::string& silo, uint64_t session,
                               const std::vector<std::string>& datasets) {
  MutexLock lock(&mu_);
  Entry& e = silos_[silo];
  e.session = session;
  e.status.name = silo;
  e.status.connected = true;
  e.status.datasets = datasets;
  e.status.last_seen = std::chrono::system_clock::now();
  ++e.status.sessions;
}

void SiloRegistry::OnHeartbeat(const std::string& silo, uint64_t session) {
  MutexLock lock(&mu_);
  auto it = silos_.find(silo);
  if (it != silos_.end() && it->second.session == session) {
    it->second.status.last_seen = std::chrono::system_clock::now();
  }
}

void SiloRegistry::OnDisconnected(const std::string& silo, uint64_t session, const Status& why) {
  MutexLock lock(&mu_);
  auto it = silos_.find(silo);
  // A stale session ending must not mark a reconnected silo as gone.
  if (it == silos_.end() || it->second.session != session) return;
  it->second.status.connected = false;
  it->second.status.last_error = std::string(why.message());
}

std::vector<SiloStatus> SiloRegistry::Snapshot() const {
  MutexLock lock(&mu_);
  std::vector<SiloStatus> out;
  for (const auto& [name, e] : silos_) out.push_back(e.status);
  return out;
}

}  // namespace fedsilo::orchestrator
