#include "transport/in_process_transport.h"

namespace fedsilo::transport {

StatusOr<FitReply> InProcessConnection::Fit(const FitRequest& request) {
  return handler_->Fit(request);
}

}  // namespace fedsilo::transport
