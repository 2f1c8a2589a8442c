// `fedsilo keys ...`: storage key rings for encryption at rest, and the
// process-wide sealer the other commands install from them.
#ifndef FEDSILO_CLI_KEYS_COMMAND_H_
#define FEDSILO_CLI_KEYS_COMMAND_H_

#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo::cli {

// Installs the file sealer of `flag_path` (or of the environment) when one is
// configured, and says which key it uses. `daemon`: the real federation's
// processes also warn, loudly, when none is configured.
Status InstallStorageSealer(const std::string& flag_path, bool daemon);

// keys new FILE: a key ring with one fresh key (mode 0600). AlreadyExists if
// FILE exists.
Status KeysNewCommand(const std::string& path);
// keys show FILE: key ids and which is current (never the keys).
Status KeysShowCommand(const std::string& path, bool json);
// keys rotate FILE [DIR...]: adds a fresh current key, saves the ring, then
// re-encrypts every encrypted file under the folders; `seal_plain` also
// encrypts the plain ones of the kinds kept sealed; `retire` then drops the
// old keys.
Status KeysRotateCommand(const std::string& path, const std::vector<std::string>& dirs,
                         bool seal_plain, bool force, bool retire, bool json);
// keys seal-existing DIR...: encrypts, with the configured ring's current key,
// the plain files of the kinds kept sealed in folders started without a ring
// (and re-seals files of an older format), listing them. InvalidArgument
// without a ring; `force`: see secure::ReencryptTree.
Status KeysSealExistingCommand(const std::string& ring_flag, const std::vector<std::string>& dirs,
                               bool force, bool json);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_KEYS_COMMAND_H_
