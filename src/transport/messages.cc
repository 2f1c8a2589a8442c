#include "transport/messages.h"

namespace fedsilo::transport {

absl::string_view TaskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kFit:
      return "fit";
    case TaskKind::kStatistics:
      return "statistics";
    case TaskKind::kEvaluate:
      return "evaluate";
  }
  return "?";
}

}  // namespace fedsilo::transport
