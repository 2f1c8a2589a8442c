#include "cli/vertical_data.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/fraud_data.h"
#include "core/file_util.h"
#include "core/seeded_shuffle.h"

namespace fedsilo::cli {
namespace {

constexpr int kPeople = 10000;
constexpr double kFraudRate = 0.06;

// One person, as every organisation could see them.
struct Person {
  std::string id;
  bool fraud = false;
};

struct Party {
  const char* name;
  double holds;  // share of the people it has
  const char* header;
  // One row of the party's columns (after the id) for a person.
  std::string (*row)(bool fraud, std::mt19937_64& rng);
};

double Clamp01(double v) { return std::min(1.0, std::max(0.0, v)); }

// Each value is drawn in its own statement: the order in which a call's
// arguments are evaluated differs between compilers, and the same seed must
// write the same bytes with any of them.

// Card activity: weak signals, and the label.
std::string BankRow(bool fraud, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0.0, 1.0);
  const double f = fraud ? 1.0 : 0.0;
  std::poisson_distribution<int> tx(2.0 + 0.6 * f);
  const double amount = std::exp(3.6 + 0.3 * f + 0.8 * n(rng));
  const int per_day = tx(rng);
  const double night = Clamp01(0.15 + 0.05 * f + 0.1 * n(rng));
  const double foreign = Clamp01(0.05 + 0.02 * f + 0.06 * n(rng));
  const double age = std::max(1.0, std::round(std::exp(6.3 - 0.3 * f + 0.9 * n(rng))));
  return absl::StrFormat("%.2f,%d,%.3f,%.3f,%.0f,%d", amount, per_day, night, foreign, age,
                         fraud ? 1 : 0);
}

// Phone and device records; a few distances are missing.
std::string TelecomRow(bool fraud, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double f = fraud ? 1.0 : 0.0;
  std::poisson_distribution<int> swaps(0.1 + 0.4 * f), devices(0.3 + 0.5 * f), roaming(2.0 + f);
  const double p = u(rng);
  const double prepaid = 0.3 + 0.25 * f;
  const char* plan = p < prepaid ? "prepaid" : p < prepaid + 0.55 ? "postpaid" : "business";
  const bool missing = u(rng) < 0.03;
  const double distance = std::exp(std::log(10.0) + 0.6 * f + 0.9 * n(rng));
  const int swapped = swaps(rng);
  const int changed = devices(rng);
  const int abroad = roaming(rng);
  return absl::StrFormat("%d,%d,%d,%s,%s", swapped, changed, abroad, plan,
                         missing ? "" : absl::StrFormat("%.1f", distance));
}

// Purchase history.
std::string RetailerRow(bool fraud, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double f = fraud ? 1.0 : 0.0;
  std::poisson_distribution<int> orders(4.0 + 1.5 * f);
  const int placed = orders(rng);
  const double gift_cards = Clamp01(0.05 + 0.06 * f + 0.08 * n(rng));
  const double returns = Clamp01(0.08 + 0.03 * f + 0.07 * n(rng));
  const int mismatch = u(rng) < 0.05 + 0.15 * f ? 1 : 0;
  const double basket = std::exp(3.8 + 0.3 * f + 0.7 * n(rng));
  return absl::StrFormat("%d,%.3f,%.3f,%d,%.2f", placed, gift_cards, returns, mismatch, basket);
}

constexpr Party kParties[] = {
    {"bank", 0.85,
     "customer_id,amount_avg,tx_per_day,night_share,foreign_share,account_age_days,is_fraud",
     &BankRow},
    {"telecom", 0.75, "customer_id,sim_swaps_90d,device_changes_90d,roaming_days,plan,distance_km",
     &TelecomRow},
    {"retailer", 0.65,
     "customer_id,orders_90d,gift_card_share,returns_share,shipping_mismatch,basket_avg",
     &RetailerRow},
};

}  // namespace

std::vector<std::string> VerticalFraudParties() {
  std::vector<std::string> names;
  for (const Party& p : kParties) names.emplace_back(p.name);
  return names;
}

Status GenerateVerticalFraudCommand(const VerticalFraudOptions& options) {
  FEDSILO_RETURN_IF_ERROR(PrepareGenerate(options.out, options.scale));
  std::mt19937_64 rng(options.seed * 1000003 + 99);
  const int people = std::max(20, static_cast<int>(std::lround(kPeople * options.scale)));
  // Customer numbers in no particular order, so that no file's order tells
  // another's.
  std::vector<int> numbers(static_cast<size_t>(people));
  std::iota(numbers.begin(), numbers.end(), 100000);
  SeededShuffle(numbers, rng);
  std::vector<Person> everyone(static_cast<size_t>(people));
  std::bernoulli_distribution is_fraud(kFraudRate);
  for (int i = 0; i < people; ++i) {
    everyone[static_cast<size_t>(i)] = {absl::StrCat("C", numbers[static_cast<size_t>(i)]),
                                        is_fraud(rng)};
  }
  std::vector<std::vector<bool>> holds;
  nlohmann::json files = nlohmann::json::array();
  for (size_t k = 0; k < std::size(kParties); ++k) {
    const Party& party = kParties[k];
    std::mt19937_64 prng(options.seed * 1000003 + k);
    std::bernoulli_distribution has(party.holds);
    std::vector<size_t> rows;
    holds.emplace_back(everyone.size(), false);
    for (size_t i = 0; i < everyone.size(); ++i) {
      if (has(prng)) {
        rows.push_back(i);
        holds.back()[i] = true;
      }
    }
    SeededShuffle(rows, prng);
    std::string csv = absl::StrCat(party.header, "\n");
    for (size_t i : rows) {
      absl::StrAppend(&csv, everyone[i].id, ",", party.row(everyone[i].fraud, prng), "\n");
    }
    const std::string path = absl::StrCat(options.out, "/", party.name, ".csv");
    FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(path, csv));
    files.push_back({{"path", path}, {"rows", rows.size()}});
    if (!options.json) std::printf("%s: %zu customers\n", path.c_str(), rows.size());
  }
  int64_t shared = 0;
  for (size_t i = 0; i < everyone.size(); ++i) {
    shared += std::all_of(holds.begin(), holds.end(), [i](const auto& h) { return h[i]; }) ? 1 : 0;
  }
  if (options.json) {
    std::printf(
        "%s\n",
        nlohmann::json({{"files", files}, {"people", people}, {"shared", shared}}).dump().c_str());
  } else {
    std::printf("%lld of %d customers are at all three\n", static_cast<long long>(shared), people);
  }
  return absl::OkStatus();
}

void AddVerticalFraudCommand(CLI::App* generate, Commands& commands) {
  auto options = std::make_shared<VerticalFraudOptions>();
  CLI::App* cmd = generate->add_subcommand(
      "fraud-vertical",
      "The same customers at a bank (with the fraud label), a telecom and a retailer: one CSV "
      "per organisation, each with its own columns and its own share of the customers");
  cmd->add_option("--out,-o", options->out, "Folder to write the CSV files to")->required();
  cmd->add_option("--seed", options->seed, "Random seed (default 7)");
  cmd->add_option("--scale", options->scale, "Customers as a multiple of 10 000");
  cmd->add_flag("--json", options->json, "Print JSON");
  commands.Add(cmd, kNoSetUp, [options] { return GenerateVerticalFraudCommand(*options); });
}

}  // namespace fedsilo::cli
