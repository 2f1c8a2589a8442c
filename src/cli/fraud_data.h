// `fedsilo generate fraud`: a synthetic card-transactions table in the
// spirit of credit-card-fraud detection, one CSV per region (silo), for the
// tabular example and tests. Seeded: the same seed writes the same bytes.
//
// Regions differ in size, fraud rate (heavy imbalance: 1-5 %) and feature
// distributions (amounts, distances); fraud differs from normal spending in
// amount, hour, merchant, distance from home, account age, card presence and
// recent activity, each a weak signal. Some distances are missing ("").
#ifndef FEDSILO_CLI_FRAUD_DATA_H_
#define FEDSILO_CLI_FRAUD_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace fedsilo::cli {

struct FraudDataOptions {
  std::string out;  // folder; created if missing
  uint64_t seed = 7;
  double scale = 1.0;  // rows = scale x each region's default (east 3000, west 2000, south 1500)
  bool json = false;
};

// The regions' names, in order; also the files' stems.
std::vector<std::string> FraudRegions();

// Checks a `generate` command's --out and --scale, and makes the folder.
Status PrepareGenerate(const std::string& out, double scale);

// Writes <out>/<region>.csv for every region and prints a line per file.
Status GenerateFraudCommand(const FraudDataOptions& options);

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_FRAUD_DATA_H_
