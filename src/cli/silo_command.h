// `fedsilo silo`: runs a silo agent until SIGINT/SIGTERM.
#ifndef FEDSILO_CLI_SILO_COMMAND_H_
#define FEDSILO_CLI_SILO_COMMAND_H_

#include <string>

#include "core/status.h"

namespace fedsilo::cli {

struct SiloCommandOptions {
  std::string kit_dir;
  std::string datasets_path;
  std::string orchestrator;  // "host:port"; empty = the kit's
  std::string data_dir;      // empty = the default data folder
  bool insecure = false;     // plaintext; the silo claims its kit's name
  std::string policy_path;   // privacy policy (YAML); empty = none
  std::string state_dir;     // empty = <kit>/state; holds privacy-ledger.json
  std::string models_dir;    // TorchScript models may be loaded from here; empty = none
  bool json = false;         // ledger: JSON output
  std::string run;           // predictions: the vertical job's run id
  std::string out;           // predictions: the CSV to write; empty = standard output
  // The audit log's signed head goes to the orchestrator at least every this
  // many entries (and at connect and at every job's end).
  int audit_anchor_every = 100;
  // > 0: the process that started this silo (`fedsilo run --processes`);
  // the silo stops when it ends, however it ends.
  int exit_with_parent = 0;
};

// `fedsilo silo ledger`: prints the silo's privacy ledger (and, with a
// policy, what is left of each budget).
Status SiloLedgerCommand(const SiloCommandOptions& options);

// `fedsilo silo predictions RUN`: the predictions the silo kept as the label
// owner of a vertical job that predicted (vertical.predict_with), opened
// when the silo's files are encrypted at rest. InvalidArgument naming the
// run, and the runs it kept predictions of, when it kept none of RUN.
Status SiloPredictionsCommand(const SiloCommandOptions& options);

// Connects out to the orchestrator and answers its tasks; reconnects with
// backoff when the connection breaks. Returns when signalled. InvalidArgument
// / NotFound for a bad kit or catalog; PermissionDenied for a kit that is not
// a silo's.
Status RunSiloCommand(const SiloCommandOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_SILO_COMMAND_H_
