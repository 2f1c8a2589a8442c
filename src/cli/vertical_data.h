// `fedsilo generate fraud-vertical`: the people of one region as three
// organisations see them, for the vertical example and tests. A bank holds
// card activity and the fraud label, a telecom holds phone and device
// records, a retailer holds purchase history; each holds its own share of
// the people (some only at one of them), in its own order, under one
// customer id. Every organisation's columns carry part of the signal, so
// the bank alone detects less fraud than the three together. Seeded: the
// same seed writes the same bytes.
#ifndef FEDSILO_CLI_VERTICAL_DATA_H_
#define FEDSILO_CLI_VERTICAL_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace fedsilo::cli {

class Commands;

struct VerticalFraudOptions {
  std::string out;  // folder; created if missing
  uint64_t seed = 7;
  double scale = 1.0;  // people = scale x 10 000
  bool json = false;
};

// The organisations' names, in order; also the files' stems.
std::vector<std::string> VerticalFraudParties();

// Writes <out>/<party>.csv for every party and prints a line per file.
Status GenerateVerticalFraudCommand(const VerticalFraudOptions& options);

// Adds `fraud-vertical` under `generate`.
void AddVerticalFraudCommand(CLI::App* generate, Commands& commands);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_VERTICAL_DATA_H_
