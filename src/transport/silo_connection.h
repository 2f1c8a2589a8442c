// The two sides of the orchestrator-silo link:
//  - SiloHandler is implemented by a silo agent: it answers requests.
//  - SiloConnection is what the orchestrator holds for each silo: it sends
//    requests and waits for the answer.
// A transport connects one to the other: in-process (simulation) or gRPC.
#ifndef FEDSILO_TRANSPORT_SILO_CONNECTION_H_
#define FEDSILO_TRANSPORT_SILO_CONNECTION_H_

#include <string>

#include "core/status.h"
#include "transport/messages.h"

namespace fedsilo::transport {

class SiloHandler {
 public:
  virtual ~SiloHandler() = default;
  // Thread safety: called for one round at a time per silo.
  virtual StatusOr<FitReply> RunTask(const TaskRequest& request) = 0;
  // Answers a secure-aggregation stage of the round it last trained for.
  virtual StatusOr<std::string> SecureStep(const SecureStepRequest& request) {
    return absl::UnimplementedError("this silo does not take part in secure aggregation");
  }
  // Answers one step of a vertical job (transport/vertical_wire.h).
  virtual StatusOr<std::string> VerticalStep(const VerticalStepRequest& request) {
    return absl::UnimplementedError("this silo does not take part in vertical jobs");
  }
};

class SiloConnection {
 public:
  virtual ~SiloConnection() = default;
  virtual const std::string& silo_name() const = 0;
  // Blocks until the silo answers or fails. Thread-safe across connections;
  // one call at a time per connection.
  virtual StatusOr<FitReply> RunTask(const TaskRequest& request) = 0;
  // Sends one secure-aggregation stage and waits for the silo's reply, like RunTask().
  virtual StatusOr<std::string> SecureStep(const SecureStepRequest& request) = 0;
  // Sends one step of a vertical job and waits for the silo's reply, like
  // RunTask().
  virtual StatusOr<std::string> VerticalStep(const VerticalStepRequest& request) {
    return absl::UnimplementedError("this connection carries no vertical steps");
  }
  // Whether a task sent now could reach the silo (a remote silo's stream is
  // open). A round to retry waits for this.
  virtual bool Reachable() const { return true; }
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_SILO_CONNECTION_H_
