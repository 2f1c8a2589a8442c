// `fedsilo audit verify LOG [--anchor ENTRY:HASH] [--anchors FILE --ca CA]`:
// checks an audit log's chain, its keys and, against anchors kept elsewhere,
// that nothing was cut off its end or rewritten.
#ifndef FEDSILO_CLI_AUDIT_COMMAND_H_
#define FEDSILO_CLI_AUDIT_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

struct AuditVerifyOptions {
  std::string path;          // the log
  std::string anchor;        // "ENTRY:HASH"; may be empty
  std::string anchors_file;  // a silo's signed heads kept by the orchestrator; may be empty
  std::string ca_file;       // the federation's CA certificate, to check their signatures
  bool json = false;
};

// Prints the entry count and the anchor of an intact log (ENTRY:HASH, to keep
// elsewhere and check later with --anchor); DataLoss naming the line of the
// first broken entry, or the first anchor the log no longer matches,
// otherwise. Anchors whose signature does not verify are PermissionDenied
// naming their line; --anchors without --ca is InvalidArgument.
Status AuditVerifyCommand(const AuditVerifyOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_AUDIT_COMMAND_H_
