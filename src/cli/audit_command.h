// `fedsilo audit verify LOG`: checks an audit log's hash chain.
#ifndef FEDSILO_CLI_AUDIT_COMMAND_H_
#define FEDSILO_CLI_AUDIT_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

// Prints the entry count and head hash of an intact log; DataLoss naming the
// line of the first broken entry otherwise.
Status AuditVerifyCommand(const std::string& path, bool json);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_AUDIT_COMMAND_H_
