// `fedsilo privacy epsilon|noise`: the RDP accountant from the command line.
#ifndef FEDSILO_CLI_PRIVACY_COMMAND_H_
#define FEDSILO_CLI_PRIVACY_COMMAND_H_

#include <cstdint>

#include "core/status.h"

namespace fedsilo::cli {

struct PrivacyOptions {
  double sample_rate = 0;       // --sample-rate
  double noise_multiplier = 0;  // --noise-multiplier (epsilon)
  double target_epsilon = 0;    // --target-epsilon (noise)
  int64_t steps = 0;            // --steps, or
  double epochs = 0;            // --epochs: steps = floor(epochs / sample_rate)
  double delta = 1e-5;          // --delta
  bool json = false;
};

// Prints ε (and the best order) after the steps. InvalidArgument naming the
// flag for bad values.
Status PrivacyEpsilonCommand(const PrivacyOptions& options);
// Prints the smallest noise multiplier that keeps ε at or under the target.
Status PrivacyNoiseCommand(const PrivacyOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_PRIVACY_COMMAND_H_
