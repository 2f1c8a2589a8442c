// Error handling shared by every module: absl::Status / absl::StatusOr<T> across
// module boundaries, with context added on the way up.
#ifndef FEDSILO_CORE_STATUS_H_
#define FEDSILO_CORE_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedsilo {

using absl::Status;
using absl::StatusOr;

// Returns `status` with "context: " prepended to its message (its payloads,
// such as the marks above, kept); OK stays OK.
// Example: Annotate(s, "silo 'b': round 3") -> "silo 'b': round 3: <message>".
Status Annotate(const Status& status, absl::string_view context);

// Errors that leave a silo. An error met while reading a silo's data or
// training on it may carry a value, a path or a line of its records; such
// messages stay in the silo's own log. A silo's boundary sends out only the
// messages marked *shareable* -- made from the job, the policy and the
// catalog's names, never from a record -- and a generic reason with its code
// for the rest (silo::Outgoing).
//
// `status` marked as safe to leave the silo as it is.
Status Shareable(Status status);
bool IsShareable(const Status& status);
// A shareable error whose message is `shared` (e.g. "row 17, column
// 'amount': not a number") with `detail` kept beside it for the silo's own
// log (e.g. "east.csv:18: '1,000'").
Status DataError(absl::StatusCode code, absl::string_view shared, absl::string_view detail);
// The detail DataError() kept ("" when none).
std::string PrivateDetail(const Status& status);
// The message with its detail, for the log of the process that met it.
std::string FullMessage(const Status& status);

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
