// InProcessConnection: a SiloConnection that calls a SiloHandler living in the
// same process, for simulation. Does not own the handler.
#ifndef FEDSILO_TRANSPORT_IN_PROCESS_TRANSPORT_H_
#define FEDSILO_TRANSPORT_IN_PROCESS_TRANSPORT_H_

#include <string>

#include "transport/silo_connection.h"

namespace fedsilo::transport {

class InProcessConnection : public SiloConnection {
 public:
  // REQUIRES: `handler` outlives this connection.
  InProcessConnection(std::string silo_name, SiloHandler* handler)
      : silo_name_(std::move(silo_name)), handler_(handler) {}

  const std::string& silo_name() const override { return silo_name_; }
  StatusOr<FitReply> RunTask(const TaskRequest& request) override;
  StatusOr<std::string> SecureStep(const SecureStepRequest& request) override {
    return handler_->SecureStep(request);
  }
  StatusOr<std::string> VerticalStep(const VerticalStepRequest& request) override {
    return handler_->VerticalStep(request);
  }

 private:
  std::string silo_name_;
  SiloHandler* handler_;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_IN_PROCESS_TRANSPORT_H_
