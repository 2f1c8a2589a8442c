#include "silo/privacy_guard.h"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/unix_time.h"
#include "core/yaml_util.h"

namespace fedsilo::silo {
namespace {

constexpr int kLedgerVersion = 1;

StatusOr<std::map<std::string, DatasetPolicy>> LoadPolicy(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  FEDSILO_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, path));
  const YAML::Node datasets = root.IsMap() ? root["datasets"] : YAML::Node();
  if (!datasets || !datasets.IsMap()) {
    return YamlError(path, root, "expected 'datasets:' mapping dataset names to their limits");
  }
  std::map<std::string, DatasetPolicy> policy;
  for (const auto& entry : datasets) {
    const std::string name = entry.first.as<std::string>();
    const YAML::Node spec = entry.second;
    const std::string where = absl::StrCat("datasets.", name);
    FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(
        path, spec, where,
        {"max_epsilon", "delta", "allow_non_dp", "min_silos", "export_metrics", "allowed_models"}));
    DatasetPolicy p;
    auto number = [&](const char* key, double min, double* out) -> Status {
      const YAML::Node n = spec[key];
      if (!n) return absl::OkStatus();
      double v = 0;
      if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v) || v < min) {
        return YamlError(path, n, absl::StrCat(where, ".", key, ": must be a number >= ", min));
      }
      *out = v;
      return absl::OkStatus();
    };
    FEDSILO_RETURN_IF_ERROR(number("max_epsilon", 0, &p.max_epsilon));
    FEDSILO_RETURN_IF_ERROR(number("delta", 0, &p.delta));
    double min_silos = 1;
    FEDSILO_RETURN_IF_ERROR(number("min_silos", 1, &min_silos));
    p.min_silos = static_cast<int>(min_silos);
    auto boolean = [&](const char* key, bool* out) -> Status {
      const YAML::Node n = spec[key];
      if (n && (!n.IsScalar() || !YAML::convert<bool>::decode(n, *out))) {
        return YamlError(path, n, absl::StrCat(where, ".", key, ": must be true or false"));
      }
      return absl::OkStatus();
    };
    FEDSILO_RETURN_IF_ERROR(boolean("allow_non_dp", &p.allow_non_dp));
    FEDSILO_RETURN_IF_ERROR(boolean("export_metrics", &p.export_metrics));
    if (const YAML::Node models = spec["allowed_models"]) {
      if (!models.IsSequence()) {
        return YamlError(path, models,
                         absl::StrCat(where, ".allowed_models: must be a list of sha256:<hex>"));
      }
      for (const auto& m : models) {
        // "sha256:<hex>" as jobs name modules, or the bare hex.
        const std::string entry = m.IsScalar() ? m.Scalar() : "";
        StatusOr<std::string> digest =
            ShippedModuleDigest(absl::StartsWith(entry, kShippedModulePrefix)
                                    ? entry
                                    : absl::StrCat(kShippedModulePrefix, entry));
        if (!digest.ok()) {
          return YamlError(path, m,
                           absl::StrCat(where, ".allowed_models: '", entry, "' is not ",
                                        kShippedModulePrefix, "<64 hex digits>"));
        }
        p.allowed_models.push_back(*digest);
      }
    }
    policy[name] = p;
  }
  return policy;
}

StatusOr<std::vector<LedgerEntry>> LoadLedger(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::vector<LedgerEntry>();
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadProtectedFile(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("version") || !j.contains("entries")) {
    return absl::DataLossError(
        absl::StrCat(path,
                     ": not a fedsilo privacy ledger (damaged?); refusing to guess what "
                     "was spent: restore it from a backup"));
  }
  if (j["version"] != kLedgerVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ledger version ",
                                                      j["version"].dump(), " is not ",
                                                      kLedgerVersion, "; run a newer fedsilo"));
  }
  std::vector<LedgerEntry> entries;
  try {
    for (const auto& e : j["entries"]) {
      // null: a job without DP, which spends an unbounded epsilon.
      const double eps = e.at("epsilon").is_null() ? HUGE_VAL : e.at("epsilon").get<double>();
      entries.push_back(
          {e.at("dataset"), e.at("run_id"), eps, e.at("delta"), e.at("first"), e.at("last")});
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": damaged ledger entry: ", e.what()));
  }
  return entries;
}

}  // namespace

StatusOr<std::unique_ptr<PrivacyGuard>> PrivacyGuard::Open(const std::string& policy_path,
                                                           const std::string& ledger_path) {
  auto guard = std::unique_ptr<PrivacyGuard>(new PrivacyGuard());
  if (!policy_path.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(guard->policy_, LoadPolicy(policy_path));
  }
  guard->ledger_path_ = ledger_path;
  FEDSILO_ASSIGN_OR_RETURN(std::vector<LedgerEntry> entries, LoadLedger(ledger_path));
  std::lock_guard<std::mutex> lock(guard->mu_);
  guard->entries_ = std::move(entries);
  return guard;
}

double PrivacyGuard::Spent(const std::string& dataset, const std::string& except_run) const {
  std::lock_guard<std::mutex> lock(mu_);
  double total = 0;
  for (const LedgerEntry& e : entries_) {
    if (e.dataset == dataset && e.run_id != except_run) total += e.epsilon;
  }
  return total;
}

std::vector<LedgerEntry> PrivacyGuard::Entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_;
}

bool PrivacyGuard::AcceptsModel(const std::string& dataset, const std::string& digest) const {
  auto it = policy_.find(dataset);
  if (it == policy_.end() || it->second.allowed_models.empty()) return true;
  const auto& allowed = it->second.allowed_models;
  return std::find(allowed.begin(), allowed.end(), digest) != allowed.end();
}

bool PrivacyGuard::ExportsMetrics(const std::string& dataset) const {
  auto it = policy_.find(dataset);
  return it == policy_.end() || it->second.export_metrics;
}

Status PrivacyGuard::Admit(const std::string& dataset, const std::string& run_id,
                           const JobConfig& job, double planned_epsilon) {
  auto it = policy_.find(dataset);
  if (it == policy_.end()) return absl::OkStatus();
  const DatasetPolicy& p = it->second;
  const std::string who = absl::StrCat("silo policy for dataset '", dataset, "': ");
  const bool dp = job.privacy.dp.mode == DpMode::kLocal;
  if (!dp && !p.allow_non_dp) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, "only differentially private training is allowed (privacy.dp.mode: local)"));
  }
  if (job.federation.min_silos < p.min_silos) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, "updates must be aggregated with at least ", p.min_silos,
                     " silos; the job's federation.min_silos is ", job.federation.min_silos));
  }
  if (p.max_epsilon > 0) {
    if (!dp) {
      return absl::FailedPreconditionError(absl::StrCat(who, "a budget of epsilon ", p.max_epsilon,
                                                        " applies, and the job has no DP"));
    }
    if (job.privacy.dp.delta > p.delta) {
      return absl::FailedPreconditionError(absl::StrFormat("%sdelta %g is above the policy's %g",
                                                           who, job.privacy.dp.delta, p.delta));
    }
    const double spent = Spent(dataset, run_id);
    if (spent + planned_epsilon > p.max_epsilon + 1e-9) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%sthe job would spend epsilon %.3f, and %.3f of the budget %.3f is spent already", who,
          planned_epsilon, spent, p.max_epsilon));
    }
  }
  return absl::OkStatus();
}

Status PrivacyGuard::Record(const std::string& dataset, const std::string& run_id, double epsilon,
                            double delta) {
  std::lock_guard<std::mutex> lock(mu_);
  const double now = UnixNow();
  bool found = false;
  for (LedgerEntry& e : entries_) {
    if (e.dataset == dataset && e.run_id == run_id) {
      e.epsilon = epsilon;
      e.delta = delta;
      e.last = now;
      found = true;
    }
  }
  if (!found) entries_.push_back({dataset, run_id, epsilon, delta, now, now});
  return Save();
}

nlohmann::json LedgerEntryToJson(const LedgerEntry& e) {
  return {{"dataset", e.dataset},
          {"run_id", e.run_id},
          {"epsilon", std::isinf(e.epsilon) ? nlohmann::json() : nlohmann::json(e.epsilon)},
          {"delta", e.delta},
          {"first", e.first},
          {"last", e.last}};
}

Status PrivacyGuard::Save() const {
  nlohmann::json entries = nlohmann::json::array();
  for (const LedgerEntry& e : entries_) entries.push_back(LedgerEntryToJson(e));
  nlohmann::json j = {{"version", kLedgerVersion}, {"entries", entries}};
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(ledger_path_).parent_path(), ec);
  return WriteProtectedFile(ledger_path_, j.dump(1) + "\n");
}

}  // namespace fedsilo::silo
