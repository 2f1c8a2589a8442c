// `fedsilo audit verify LOG [--anchor ENTRY:HASH]`: checks an audit log's
// chain, its keys and, with an anchor, that nothing was cut off its end.
#ifndef FEDSILO_CLI_AUDIT_COMMAND_H_
#define FEDSILO_CLI_AUDIT_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

// Prints the entry count and the anchor of an intact log (ENTRY:HASH, to keep
// elsewhere and check later with --anchor); DataLoss naming the line of the
// first broken entry otherwise. `anchor` may be empty.
Status AuditVerifyCommand(const std::string& path, const std::string& anchor, bool json);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_AUDIT_COMMAND_H_
