// Error handling shared by every module: absl::Status / absl::StatusOr<T> across
// module boundaries, with context added on the way up.
#ifndef FEDSILO_CORE_STATUS_H_
#define FEDSILO_CORE_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedsilo {

using absl::Status;
using absl::StatusOr;

// Returns `status` with "context: " prepended to its message; OK stays OK.
// Example: Annotate(s, "silo 'b': round 3") -> "silo 'b': round 3: <message>".
Status Annotate(const Status& status, absl::string_view context);

// True for errors caused by bad input from a user or a peer (a config, an
// argument, a data file, a model file): the CLI exits with status 2 for these.
bool IsInvalidInput(const Status& status);

}  // namespace fedsilo

#define FEDSILO_STATUS_CONCAT_INNER_(a, b) a##b
#define FEDSILO_STATUS_CONCAT_(a, b) FEDSILO_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define FEDSILO_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status fedsilo_status_ = (expr);           \
    if (!fedsilo_status_.ok()) return fedsilo_status_; \
  } while (false)

// FEDSILO_ASSIGN_OR_RETURN(auto x, MaybeX()); returns the error if not OK.
#define FEDSILO_ASSIGN_OR_RETURN(lhs, expr) \
  FEDSILO_ASSIGN_OR_RETURN_IMPL_(FEDSILO_STATUS_CONCAT_(fedsilo_statusor_, __LINE__), lhs, expr)
#define FEDSILO_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

#endif  // FEDSILO_CORE_STATUS_H_
