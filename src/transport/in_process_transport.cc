#include "transport/in_process_transport.h"

namespace fedsilo::transport {

StatusOr<FitReply> InProcessConnection::RunTask(const TaskRequest& request) {
  return handler_->RunTask(request);
}

}  // namespace fedsilo::transport
