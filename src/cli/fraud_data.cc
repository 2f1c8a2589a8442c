#include "cli/fraud_data.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/vertical_data.h"
#include "core/file_util.h"

namespace fedsilo::cli {
namespace {

struct Region {
  const char* name;
  int rows;
  double fraud_rate;
  double amount_scale;   // local price level
  double distance_mean;  // km, rural regions travel further
  double missing_distance;
};

constexpr Region kRegions[] = {
    {"east", 3000, 0.012, 1.0, 8.0, 0.0},
    {"west", 2000, 0.03, 1.4, 12.0, 0.02},
    {"south", 1500, 0.05, 0.7, 25.0, 0.05},
};

constexpr const char* kMerchants[] = {"grocery", "restaurant", "online",
                                      "travel",  "atm",        "electronics"};
// Spending mix of normal and fraudulent transactions over kMerchants.
constexpr double kNormalMix[] = {0.35, 0.2, 0.2, 0.05, 0.15, 0.05};
constexpr double kFraudMix[] = {0.05, 0.05, 0.4, 0.15, 0.1, 0.25};

std::string Row(const Region& r, bool fraud, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double amount =
      r.amount_scale * std::exp((fraud ? 4.3 : 3.4) + (fraud ? 1.1 : 0.9) * normal(rng));
  // Fraud clusters at night; normal spending in the day.
  const double hour_center = fraud ? 2.0 : 14.0;
  const int hour =
      static_cast<int>(std::lround(hour_center + (fraud ? 5.0 : 4.5) * normal(rng)) + 48) % 24;
  std::discrete_distribution<int> merchant(fraud ? std::begin(kFraudMix) : std::begin(kNormalMix),
                                           fraud ? std::end(kFraudMix) : std::end(kNormalMix));
  const char* m = kMerchants[merchant(rng)];
  const double distance =
      std::exp(std::log(r.distance_mean) + (fraud ? 1.2 : 0.0) + 0.9 * normal(rng));
  const bool distance_missing = uniform(rng) < r.missing_distance;
  const double account_age =
      std::max(1.0, std::round(std::exp((fraud ? 5.0 : 6.3) + 0.9 * normal(rng))));
  const int card_present = uniform(rng) < (fraud ? 0.25 : 0.7) ? 1 : 0;
  std::poisson_distribution<int> activity(fraud ? 5.0 : 2.0);
  return absl::StrFormat("%.2f,%d,%s,%s,%.0f,%d,%d,%d\n", amount, hour, m,
                         distance_missing ? "" : absl::StrFormat("%.1f", distance), account_age,
                         card_present, activity(rng), fraud ? 1 : 0);
}

}  // namespace

std::vector<std::string> FraudRegions() {
  std::vector<std::string> names;
  for (const Region& r : kRegions) names.emplace_back(r.name);
  return names;
}

Status PrepareGenerate(const std::string& out, double scale) {
  if (out.empty()) return absl::InvalidArgumentError("--out: a folder is required");
  if (!(scale > 0) || scale > 1000) {
    return absl::InvalidArgumentError("--scale: must be in (0, 1000]");
  }
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out ", out, ": cannot create: ", ec.message()));
  }
  return absl::OkStatus();
}

Status GenerateFraudCommand(const FraudDataOptions& options) {
  FEDSILO_RETURN_IF_ERROR(PrepareGenerate(options.out, options.scale));
  nlohmann::json files = nlohmann::json::array();
  for (size_t i = 0; i < std::size(kRegions); ++i) {
    const Region& r = kRegions[i];
    std::mt19937_64 rng(options.seed * 1000003 + i);
    const int rows = std::max(10, static_cast<int>(std::lround(r.rows * options.scale)));
    // Exactly round(rate x rows) frauds (at least one), in random places.
    const int frauds = std::max(1, static_cast<int>(std::lround(r.fraud_rate * rows)));
    std::vector<bool> is_fraud(static_cast<size_t>(rows), false);
    std::fill(is_fraud.begin(), is_fraud.begin() + frauds, true);
    std::shuffle(is_fraud.begin(), is_fraud.end(), rng);
    std::string csv =
        "amount,hour,merchant,distance_km,account_age_days,card_present,tx_last_24h,is_fraud\n";
    for (bool fraud : is_fraud) csv += Row(r, fraud, rng);
    const std::string path = absl::StrCat(options.out, "/", r.name, ".csv");
    FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(path, csv));
    files.push_back({{"path", path}, {"rows", rows}, {"frauds", frauds}});
    if (!options.json) {
      std::printf("%s: %d transactions, %d fraudulent (%.1f %%)\n", path.c_str(), rows, frauds,
                  100.0 * frauds / rows);
    }
  }
  if (options.json) std::printf("%s\n", nlohmann::json({{"files", files}}).dump().c_str());
  return absl::OkStatus();
}

void RegisterGenerateCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<FraudDataOptions>();
  CLI::App* generate = app.add_subcommand("generate", "Write example data sets");
  generate->require_subcommand(1);
  CLI::App* fraud = generate->add_subcommand(
      "fraud",
      "Synthetic card transactions, one CSV per region (east, west, south): imbalanced, "
      "with regional shifts and missing values");
  fraud->add_option("--out,-o", options->out, "Folder to write the CSV files to")->required();
  fraud->add_option("--seed", options->seed, "Random seed (default 7)");
  fraud->add_option("--scale", options->scale,
                    "Rows as a multiple of the defaults (3000, 2000, 1500)");
  fraud->add_flag("--json", options->json, "Print JSON");
  commands.Add(fraud, kNoSetUp, [options] { return GenerateFraudCommand(*options); });
  AddVerticalFraudCommand(generate, commands);
}

}  // namespace fedsilo::cli
