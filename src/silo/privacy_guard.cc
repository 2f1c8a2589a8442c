#include "silo/privacy_guard.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/job_schema.h"
#include "core/mutex.h"
#include "core/unix_time.h"
#include "core/yaml_util.h"
#include "ml/model.h"
#include "privacy/rdp_accountant.h"
#include "secure/audit_log.h"

namespace fedsilo::silo {
namespace {

constexpr int kLedgerVersion = 2;

// Reads one dataset's keys (or the defaults') over `p`.
Status ParseDatasetPolicy(const std::string& path, const YAML::Node& spec, const std::string& where,
                          DatasetPolicy* p) {
  FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(
      path, spec, where,
      {"max_epsilon", "delta", "allow_non_dp", "require_local_dp", "require_secure_aggregation",
       "min_silos", "max_evaluations_per_run", "statistics", "share_train_metrics",
       "export_metrics", "allowed_models", "vertical"}));
  auto number = [&](const YAML::Node& n, const std::string& key, double min,
                    double* out) -> Status {
    if (!n) return absl::OkStatus();
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v) || v < min) {
      return YamlError(path, n, absl::StrCat(where, ".", key, ": must be a number >= ", min));
    }
    *out = v;
    return absl::OkStatus();
  };
  auto whole = [&](const YAML::Node& n, const std::string& key, int64_t min,
                   int64_t* out) -> Status {
    if (!n) return absl::OkStatus();
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || v != std::floor(v) || v < min ||
        v > 1e9) {
      return YamlError(path, n, absl::StrCat(where, ".", key, ": must be a whole number >= ", min));
    }
    *out = static_cast<int64_t>(v);
    return absl::OkStatus();
  };
  auto boolean = [&](const YAML::Node& n, const std::string& key, bool* out) -> Status {
    if (n && (!n.IsScalar() || !YAML::convert<bool>::decode(n, *out))) {
      return YamlError(path, n, absl::StrCat(where, ".", key, ": must be true or false"));
    }
    return absl::OkStatus();
  };
  FEDSILO_RETURN_IF_ERROR(number(spec["max_epsilon"], "max_epsilon", 0, &p->max_epsilon));
  FEDSILO_RETURN_IF_ERROR(number(spec["delta"], "delta", 0, &p->delta));
  int64_t min_silos = p->min_silos;
  FEDSILO_RETURN_IF_ERROR(whole(spec["min_silos"], "min_silos", 1, &min_silos));
  p->min_silos = static_cast<int>(min_silos);
  int64_t evaluations = p->max_evaluations_per_run;
  FEDSILO_RETURN_IF_ERROR(
      whole(spec["max_evaluations_per_run"], "max_evaluations_per_run", 0, &evaluations));
  p->max_evaluations_per_run = static_cast<int>(evaluations);
  if (spec["allow_non_dp"]) {
    bool allow = !p->require_local_dp;
    FEDSILO_RETURN_IF_ERROR(boolean(spec["allow_non_dp"], "allow_non_dp", &allow));
    p->require_local_dp = !allow;
  }
  FEDSILO_RETURN_IF_ERROR(
      boolean(spec["require_local_dp"], "require_local_dp", &p->require_local_dp));
  FEDSILO_RETURN_IF_ERROR(boolean(spec["require_secure_aggregation"], "require_secure_aggregation",
                                  &p->require_secure_aggregation));
  FEDSILO_RETURN_IF_ERROR(boolean(spec["export_metrics"], "export_metrics", &p->export_metrics));
  if (const YAML::Node share = spec["share_train_metrics"]) {
    bool v = true;
    FEDSILO_RETURN_IF_ERROR(boolean(share, "share_train_metrics", &v));
    p->share_train_metrics = v;
  }
  if (const YAML::Node st = spec["statistics"]) {
    const std::string at = where + ".statistics";
    if (!st.IsMap()) {
      return YamlError(path, st, at + ": must be a mapping {min_count: N, share_min_max: bool}");
    }
    FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(path, st, at, {"min_count", "share_min_max"}));
    FEDSILO_RETURN_IF_ERROR(
        whole(st["min_count"], "statistics.min_count", 0, &p->statistics.min_count));
    FEDSILO_RETURN_IF_ERROR(
        boolean(st["share_min_max"], "statistics.share_min_max", &p->statistics.share_min_max));
  }
  if (const YAML::Node v = spec["vertical"]) {
    const std::string at = where + ".vertical";
    if (!v.IsMap()) {
      return YamlError(path, v,
                       at + ": must be a mapping {allow: bool, columns: [...], max_peer_ids: N}");
    }
    FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(
        path, v, at, {"allow", "columns", "max_peer_ids", "min_intersection", "peers"}));
    FEDSILO_RETURN_IF_ERROR(whole(v["min_intersection"], "vertical.min_intersection", 1,
                                  &p->vertical.min_intersection));
    FEDSILO_RETURN_IF_ERROR(boolean(v["allow"], "vertical.allow", &p->vertical.allow));
    FEDSILO_RETURN_IF_ERROR(
        whole(v["max_peer_ids"], "vertical.max_peer_ids", 1, &p->vertical.max_peer_ids));
    for (const auto& [name, list] :
         {std::pair<const char*, std::vector<std::string>*>{"columns", &p->vertical.columns},
          {"peers", &p->vertical.peers}}) {
      const YAML::Node items = v[name];
      if (!items) continue;
      if (!items.IsSequence() || items.size() == 0) {
        return YamlError(path, items, absl::StrCat(at, ".", name, ": must be a list of names"));
      }
      list->clear();
      for (const auto& c : items) {
        if (!c.IsScalar() || c.Scalar().empty()) {
          return YamlError(path, c, absl::StrCat(at, ".", name, ": each entry must be a name"));
        }
        list->push_back(c.Scalar());
      }
    }
  }
  if (const YAML::Node models = spec["allowed_models"]) {
    if (!models.IsSequence()) {
      return YamlError(path, models,
                       absl::StrCat(where, ".allowed_models: must be a list of sha256:<hex>"));
    }
    p->allowed_models.clear();
    for (const auto& m : models) {
      // "sha256:<hex>" as jobs name modules, or the bare hex.
      const std::string entry = m.IsScalar() ? m.Scalar() : "";
      StatusOr<std::string> digest =
          ShippedModuleDigest(absl::StartsWith(entry, kShippedModulePrefix)
                                  ? entry
                                  : absl::StrCat(kShippedModulePrefix, entry));
      if (!digest.ok() || digest->empty()) {
        return YamlError(path, m,
                         absl::StrCat(where, ".allowed_models: '", entry, "' is not ",
                                      kShippedModulePrefix, "<64 hex digits>"));
      }
      p->allowed_models.push_back(*digest);
    }
  }
  return absl::OkStatus();
}

struct Policy {
  bool allow_any_module = false;
  DatasetPolicy defaults;
  std::map<std::string, DatasetPolicy> datasets;
};

namespace {
StatusOr<Policy> LoadPolicyUnguarded(const std::string& path);
}  // namespace

StatusOr<Policy> LoadPolicy(const std::string& path) {
  return GuardYaml<Policy>(path, [&] { return LoadPolicyUnguarded(path); });
}

namespace {
StatusOr<Policy> LoadPolicyUnguarded(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  FEDSILO_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, path));
  if (!root.IsMap()) {
    return YamlError(path, root, "expected 'datasets:' mapping dataset names to their limits");
  }
  FEDSILO_RETURN_IF_ERROR(
      CheckYamlKeys(path, root, "policy", {"allow_any_module", "defaults", "datasets"}));
  Policy policy;
  if (const YAML::Node any = root["allow_any_module"]) {
    if (!any.IsScalar() || !YAML::convert<bool>::decode(any, policy.allow_any_module)) {
      return YamlError(path, any, "allow_any_module: must be true or false");
    }
  }
  if (const YAML::Node defaults = root["defaults"]) {
    if (!defaults.IsMap()) return YamlError(path, defaults, "defaults: must be a mapping");
    FEDSILO_RETURN_IF_ERROR(ParseDatasetPolicy(path, defaults, "defaults", &policy.defaults));
  }
  const YAML::Node datasets = root["datasets"];
  if (datasets && !datasets.IsMap()) {
    return YamlError(path, datasets, "datasets: must map dataset names to their limits");
  }
  if (!datasets && !root["defaults"] && !root["allow_any_module"]) {
    return YamlError(path, root, "expected 'datasets:' mapping dataset names to their limits");
  }
  for (const auto& entry : datasets) {
    const std::string name = entry.first.as<std::string>();
    if (!entry.second.IsMap()) {
      return YamlError(path, entry.second, absl::StrCat("datasets.", name, ": must be a mapping"));
    }
    DatasetPolicy p = policy.defaults;  // a dataset's keys refine the defaults
    FEDSILO_RETURN_IF_ERROR(
        ParseDatasetPolicy(path, entry.second, absl::StrCat("datasets.", name), &p));
    policy.datasets[name] = p;
  }
  return policy;
}
}  // namespace

double Epsilon(double q, double sigma, int64_t steps, double delta) {
  if (steps == 0) return 0;
  StatusOr<privacy::PrivacySpent> spent = privacy::ComputeEpsilon(q, sigma, steps, delta);
  return spent.ok() ? spent->epsilon : HUGE_VAL;
}

// Fills in an entry's epsilons from its plan (entries with our accountant).
void Account(LedgerEntry& e) {
  if (!e.dp) {
    e.epsilon = e.planned_epsilon = HUGE_VAL;
    return;
  }
  if (e.accountant != kLedgerAccountant) return;  // as recorded
  e.epsilon = Epsilon(e.sample_rate, e.noise_multiplier, e.steps, e.delta);
  e.planned_epsilon = Epsilon(e.sample_rate, e.noise_multiplier, e.planned_steps, e.delta);
}

StatusOr<std::vector<LedgerEntry>> LoadLedger(const std::string& path, int64_t& generation,
                                              int64_t& audited_entries) {
  generation = 0;
  audited_entries = 0;
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return std::vector<LedgerEntry>();
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadProtectedFile(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("version") || !j.contains("entries") ||
      !j["entries"].is_array()) {
    return absl::DataLossError(
        absl::StrCat(path,
                     ": not a fedsilo privacy ledger (damaged?); refusing to guess what "
                     "was spent: restore it from a backup"));
  }
  const nlohmann::json version = j["version"];
  if (version != 1 && version != kLedgerVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ledger version ", version.dump(),
                                                      " is not ", kLedgerVersion,
                                                      "; run a newer fedsilo"));
  }
  std::vector<LedgerEntry> entries;
  try {
    if (j.contains("generation")) generation = j["generation"].get<int64_t>();
    if (j.contains("audit_entries")) audited_entries = j["audit_entries"].get<int64_t>();
    for (const auto& e : j["entries"]) {
      LedgerEntry entry;
      entry.dataset = e.at("dataset").get<std::string>();
      entry.run_id = e.at("run_id").get<std::string>();
      entry.delta = e.at("delta").get<double>();
      entry.first = e.at("first").get<double>();
      entry.last = e.at("last").get<double>();
      if (version == 1) {
        // Epsilon only: composes basically. null: a job without DP.
        entry.dp = !e.at("epsilon").is_null();
        entry.epsilon = entry.planned_epsilon = entry.dp ? e.at("epsilon").get<double>() : HUGE_VAL;
      } else {
        entry.job_digest = e.at("job_digest").get<std::string>();
        entry.statistics_digest = e.at("statistics_digest").get<std::string>();
        entry.evaluations = e.at("evaluations").get<int>();
        if (e.contains("secure_aggregation_reveals")) {
          for (const auto& r : e.at("secure_aggregation_reveals")) {
            secure::SecAggReveal reveal;
            reveal.run_id = entry.run_id;
            reveal.round = r.at("round").get<int>();
            reveal.origin = r.at("model").get<std::string>();
            reveal.survivors = r.at("survivors").get<std::vector<std::string>>();
            entry.reveals.push_back(std::move(reveal));
          }
        }
        const nlohmann::json& dp = e.at("dp");
        entry.dp = !dp.is_null();
        if (entry.dp) {
          entry.accountant = dp.at("accountant").get<std::string>();
          entry.noise_multiplier = dp.at("noise_multiplier").get<double>();
          entry.sample_rate = dp.at("sample_rate").get<double>();
          entry.steps = dp.at("steps").get<int64_t>();
          entry.planned_steps = dp.at("planned_steps").get<int64_t>();
          if (entry.steps < 0 || entry.planned_steps < 0 || !(entry.noise_multiplier >= 0) ||
              !(entry.sample_rate >= 0 && entry.sample_rate <= 1)) {
            throw nlohmann::json::other_error::create(501, "impossible DP plan", nullptr);
          }
          if (entry.accountant != kLedgerAccountant) {
            entry.epsilon = e.at("epsilon").is_null() ? HUGE_VAL : e.at("epsilon").get<double>();
            entry.planned_epsilon = e.at("planned_epsilon").is_null()
                                        ? HUGE_VAL
                                        : e.at("planned_epsilon").get<double>();
          }
        }
      }
      Account(entry);
      entries.push_back(std::move(entry));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": damaged ledger entry: ", e.what()));
  }
  return entries;
}

std::string Who(const std::string& dataset) {
  return absl::StrCat("silo policy for dataset '", dataset, "': ");
}

// A task of a run the silo never admitted on `dataset`.
Status NotAdmitted(const std::string& dataset, const std::string& run_id) {
  return Shareable(absl::FailedPreconditionError(
      absl::StrCat("silo has not admitted job '", run_id, "' on '", dataset, "'")));
}

Status Refuse(const std::string& dataset, const std::string& why) {
  return Shareable(absl::FailedPreconditionError(absl::StrCat(Who(dataset), why)));
}

}  // namespace

bool DatasetPolicy::SharesTrainMetrics(const JobConfig& job) const {
  if (share_train_metrics.has_value()) return *share_train_metrics;
  // Measured without noise, and per silo: not under local DP, and not when
  // the job masks the silos' updates (a module could make its loss say what
  // the masked update hides).
  return !require_local_dp && job.privacy.dp.mode != DpMode::kLocal &&
         !require_secure_aggregation && !job.privacy.secure_aggregation.enabled;
}

int DatasetPolicy::MaxEvaluations(const JobConfig& job) const {
  // The job sets its rounds: without the key, one evaluation a round with
  // room for resumed ones, and never more than 200 however many rounds.
  return max_evaluations_per_run > 0 ? max_evaluations_per_run
                                     : std::min(2 * job.training.rounds, 200);
}

StatusOr<DpPlan> PlanDp(const JobConfig& job, int64_t train_rows) {
  const DpConfig& dp = job.privacy.dp;
  DpPlan plan;
  plan.sample_rate = ml::DpSampleRate(train_rows, job.training.batch_size);
  plan.steps_per_round = static_cast<int64_t>(job.training.local_epochs) *
                         ml::DpStepsPerEpoch(train_rows, job.training.batch_size);
  plan.planned_steps = static_cast<int64_t>(job.training.rounds) * plan.steps_per_round;
  plan.delta = dp.delta;
  if (dp.noise_multiplier > 0) {
    plan.noise_multiplier = dp.noise_multiplier;
    return plan;
  }
  StatusOr<double> sigma = privacy::ComputeNoiseMultiplier(dp.target_epsilon, plan.sample_rate,
                                                           plan.planned_steps, dp.delta);
  if (!sigma.ok()) return Shareable(Annotate(sigma.status(), "privacy.dp.target_epsilon"));
  plan.noise_multiplier = *sigma;
  return plan;
}

const DatasetPolicy& RulesFor(const PrivacyGuard* guard, const std::string& dataset) {
  static const DatasetPolicy kDefaults;
  return guard != nullptr ? guard->PolicyFor(dataset) : kDefaults;
}

std::string PinnedJobDigest(const JobConfig& job) {
  JobConfig pinned = job;
  pinned.preprocess.statistics = FeatureStatistics();
  return secure::BytesDigest(JobConfigToStableYaml(pinned));
}

std::string StatisticsDigest(const JobConfig& job) {
  if (job.preprocess.statistics.empty()) return "";
  return secure::BytesDigest(JobConfigToStableYaml(job));
}

StatusOr<std::unique_ptr<PrivacyGuard>> PrivacyGuard::Open(const std::string& policy_path,
                                                           const std::string& ledger_path) {
  auto guard = std::unique_ptr<PrivacyGuard>(new PrivacyGuard());
  if (!policy_path.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(Policy policy, LoadPolicy(policy_path));
    guard->allow_any_module_ = policy.allow_any_module;
    guard->defaults_ = std::move(policy.defaults);
    guard->policy_ = std::move(policy.datasets);
  }
  guard->ledger_path_ = ledger_path;
  int64_t generation = 0, audited_entries = 0;
  FEDSILO_ASSIGN_OR_RETURN(std::vector<LedgerEntry> entries,
                           LoadLedger(ledger_path, generation, audited_entries));
  MutexLock lock(&guard->mu_);
  guard->entries_ = std::move(entries);
  guard->generation_ = generation;
  guard->audited_entries_ = audited_entries;
  return guard;
}

const DatasetPolicy& PrivacyGuard::PolicyFor(const std::string& dataset) const {
  auto it = policy_.find(dataset);
  return it == policy_.end() ? defaults_ : it->second;
}

LedgerEntry* PrivacyGuard::Find(const std::string& dataset, const std::string& run_id) {
  for (LedgerEntry& e : entries_) {
    if (e.dataset == dataset && e.run_id == run_id) return &e;
  }
  return nullptr;
}

std::vector<LedgerEntry> PrivacyGuard::Entries() const {
  MutexLock lock(&mu_);
  return entries_;
}

Status PrivacyGuard::CheckModel(const std::string& dataset, const std::string& digest) const {
  if (allow_any_module_) return absl::OkStatus();
  const std::vector<std::string>& allowed = PolicyFor(dataset).allowed_models;
  if (std::find(allowed.begin(), allowed.end(), digest) != allowed.end()) {
    return absl::OkStatus();
  }
  return Refuse(dataset, absl::StrCat("model ", kShippedModulePrefix, digest,
                                      " is not among its allowed_models (a silo runs only the "
                                      "TorchScript modules its owner listed)"));
}

Status PrivacyGuard::CheckJob(const std::string& dataset, const std::string& run_id,
                              const JobConfig& job) const {
  const DatasetPolicy& p = PolicyFor(dataset);
  const bool dp = job.privacy.dp.mode == DpMode::kLocal;
  if (p.require_local_dp && !dp) {
    return Refuse(dataset,
                  "only differentially private training is allowed (require_local_dp; the "
                  "job needs privacy.dp.mode local)");
  }
  if (p.require_secure_aggregation && !job.privacy.secure_aggregation.enabled) {
    return Refuse(dataset,
                  "updates must be securely aggregated (require_secure_aggregation; the job "
                  "needs privacy.secure_aggregation)");
  }
  if (job.federation.min_silos < p.min_silos) {
    return Refuse(dataset, absl::StrCat("updates must be aggregated with at least ", p.min_silos,
                                        " silos (min_silos); the job's federation.min_silos is ",
                                        job.federation.min_silos));
  }
  if (p.max_epsilon > 0) {
    if (!dp) {
      return Refuse(dataset, absl::StrFormat("a budget of epsilon %g applies (max_epsilon), and "
                                             "the job has no DP",
                                             p.max_epsilon));
    }
    if (job.privacy.dp.delta > p.delta) {
      return Refuse(dataset, absl::StrFormat("delta %g is above the policy's %g (delta)",
                                             job.privacy.dp.delta, p.delta));
    }
  }
  const std::string digest = PinnedJobDigest(job);  // the YAML and its hash, not under the lock
  MutexLock lock(&mu_);
  for (const LedgerEntry& e : entries_) {
    if (e.dataset == dataset && e.run_id == run_id && !e.job_digest.empty() &&
        e.job_digest != digest) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("silo refuses job '", run_id,
                       "': this task carries a job other than the one admitted "
                       "for the run (a run's job is pinned when its first task is admitted)")));
    }
  }
  return absl::OkStatus();
}

BudgetUse PrivacyGuard::UseLocked(const std::string& dataset, bool reserved,
                                  const LedgerEntry* extra, const std::string& skip_run) const {
  std::vector<const LedgerEntry*> runs;
  for (const LedgerEntry& e : entries_) {
    if (e.dataset == dataset && (extra == nullptr || e.run_id != extra->run_id) &&
        e.run_id != skip_run) {
      runs.push_back(&e);
    }
  }
  if (extra != nullptr) runs.push_back(extra);
  BudgetUse use;
  bool rdp = true;
  for (const LedgerEntry* e : runs) {
    if (!e->dp) {
      use.epsilon = HUGE_VAL;
      use.composition = "unbounded (a job without DP)";
      return use;
    }
    rdp = rdp && e->accountant == kLedgerAccountant;
  }
  const double budget_delta = PolicyFor(dataset).delta;
  if (rdp) {
    // Rényi DP composes by adding each order's divergence.
    privacy::RdpAccountant accountant;
    bool spent_any = false;
    for (const LedgerEntry* e : runs) {
      const int64_t steps = reserved ? std::max(e->planned_steps, e->steps) : e->steps;
      (void)accountant.Compose(e->sample_rate, e->noise_multiplier, steps);
      spent_any = spent_any || (steps > 0 && e->sample_rate > 0);
    }
    use.composition = "RDP";
    if (!spent_any) return use;  // nothing spent: epsilon 0
    use.delta = budget_delta;
    if (budget_delta <= 0 || budget_delta >= 1) {
      use.epsilon = HUGE_VAL;
      return use;
    }
    StatusOr<privacy::PrivacySpent> spent = accountant.Spent(budget_delta);
    use.epsilon = spent.ok() ? spent->epsilon : HUGE_VAL;
    return use;
  }
  use.composition = "basic";
  for (const LedgerEntry* e : runs) {
    use.epsilon += reserved ? std::max(e->planned_epsilon, e->epsilon) : e->epsilon;
    use.delta += e->delta;
  }
  return use;
}

BudgetUse PrivacyGuard::Use(const std::string& dataset, bool reserved) const {
  MutexLock lock(&mu_);
  return UseLocked(dataset, reserved);
}

Status PrivacyGuard::CheckBudget(const std::string& dataset, const LedgerEntry* extra) const {
  const DatasetPolicy& p = PolicyFor(dataset);
  if (p.max_epsilon <= 0) return absl::OkStatus();
  const BudgetUse use = UseLocked(dataset, /*reserved=*/true, extra);
  if (use.epsilon > p.max_epsilon + 1e-9 || use.delta > p.delta * (1 + 1e-9)) {
    // What the other runs hold, for the message.
    const BudgetUse others =
        UseLocked(dataset, /*reserved=*/true, nullptr, extra != nullptr ? extra->run_id : "");
    return Refuse(dataset,
                  absl::StrFormat("the job would spend epsilon %.3f, and %.3f of the budget "
                                  "%.3f is spent or reserved already: together epsilon %.3f "
                                  "at delta %g by %s composition, past the budget (max_epsilon)",
                                  extra != nullptr ? extra->planned_epsilon : 0.0, others.epsilon,
                                  p.max_epsilon, use.epsilon, use.delta, use.composition));
  }
  return absl::OkStatus();
}

StatusOr<LedgerEntry> PrivacyGuard::Admit(const std::string& dataset, const std::string& run_id,
                                          const JobConfig& job, const DpPlan* dp) {
  FEDSILO_RETURN_IF_ERROR(CheckJob(dataset, run_id, job));
  MutexLock lock(&mu_);
  if (LedgerEntry* known = Find(dataset, run_id)) {
    if (known->job_digest.empty()) {  // a version 1 entry: pinned now, for good
      known->job_digest = PinnedJobDigest(job);
      FEDSILO_RETURN_IF_ERROR(Save());
    }
    if (known->dp != (dp != nullptr)) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("silo refuses job '", run_id, "': admitted ", known->dp ? "with" : "without",
                       " DP, and this task is ", dp != nullptr ? "with" : "without", " it")));
    }
    return *known;
  }
  LedgerEntry entry;
  entry.dataset = dataset;
  entry.run_id = run_id;
  entry.job_digest = PinnedJobDigest(job);
  entry.first = entry.last = UnixNow();
  if (dp != nullptr) {
    entry.dp = true;
    entry.accountant = kLedgerAccountant;
    entry.noise_multiplier = dp->noise_multiplier;
    entry.sample_rate = dp->sample_rate;
    entry.planned_steps = dp->planned_steps;
    entry.delta = dp->delta;
  }
  Account(entry);
  FEDSILO_RETURN_IF_ERROR(CheckBudget(dataset, &entry));
  entries_.push_back(entry);
  Status saved = Save();
  if (!saved.ok()) {
    entries_.pop_back();
    return saved;
  }
  return entry;
}

StatusOr<LedgerEntry> PrivacyGuard::Charge(const std::string& dataset, const std::string& run_id,
                                           int64_t steps) {
  MutexLock lock(&mu_);
  LedgerEntry* e = Find(dataset, run_id);
  if (e == nullptr || !e->dp) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo has not admitted job '", run_id, "' for DP-SGD on '", dataset, "'")));
  }
  if (e->accountant != kLedgerAccountant) {
    return Refuse(dataset, absl::StrCat("job '", run_id,
                                        "' was admitted by an older fedsilo, whose ledger "
                                        "kept no plan to continue it by"));
  }
  if (steps < 0 || e->steps + steps > e->planned_steps) {
    return Refuse(dataset, absl::StrCat("job '", run_id, "' would take ", e->steps + steps,
                                        " DP-SGD steps, past the ", e->planned_steps,
                                        " planned when it was admitted (its privacy.dp plan)"));
  }
  LedgerEntry charged = *e;
  charged.steps += steps;
  charged.last = UnixNow();
  Account(charged);
  FEDSILO_RETURN_IF_ERROR(CheckBudget(dataset, &charged));
  const LedgerEntry before = *e;
  *e = charged;
  Status saved = Save();
  if (!saved.ok()) {
    *e = before;
    return saved;
  }
  return charged;
}

Status PrivacyGuard::CountEvaluation(const std::string& dataset, const std::string& run_id,
                                     const JobConfig& job) {
  MutexLock lock(&mu_);
  LedgerEntry* e = Find(dataset, run_id);
  if (e == nullptr) {
    return NotAdmitted(dataset, run_id);
  }
  const int max = PolicyFor(dataset).MaxEvaluations(job);
  if (e->evaluations >= max) {
    return Refuse(dataset, absl::StrCat("job '", run_id, "' has had its ", max,
                                        " evaluations of this silo's test rows "
                                        "(max_evaluations_per_run)"));
  }
  ++e->evaluations;
  e->last = UnixNow();
  Status saved = Save();
  if (!saved.ok()) --e->evaluations;
  return saved;
}

Status PrivacyGuard::PinStatistics(const std::string& dataset, const std::string& run_id,
                                   const std::string& digest) {
  MutexLock lock(&mu_);
  LedgerEntry* e = Find(dataset, run_id);
  if (e == nullptr) {
    return NotAdmitted(dataset, run_id);
  }
  if (e->statistics_digest == digest) return absl::OkStatus();
  if (!e->statistics_digest.empty()) {
    return Shareable(absl::FailedPreconditionError(absl::StrCat(
        "silo refuses job '", run_id,
        "': this task carries other federated statistics than the run's earlier tasks")));
  }
  e->statistics_digest = digest;
  return Save();
}

Status PrivacyGuard::RecordSecAggReveal(const std::string& dataset,
                                        const secure::SecAggReveal& reveal) {
  MutexLock lock(&mu_);
  LedgerEntry* e = Find(dataset, reveal.run_id);
  if (e == nullptr) {
    return NotAdmitted(dataset, reveal.run_id);
  }
  bool known = false;
  for (const LedgerEntry& other : entries_) {
    if (other.dataset != dataset) continue;
    Status second = secure::CheckSecondReveal(other.reveals, reveal);
    if (!second.ok()) return Refuse(dataset, std::string(second.message()));
    known |= std::find(other.reveals.begin(), other.reveals.end(), reveal) != other.reveals.end();
  }
  if (known) return absl::OkStatus();
  e->reveals.push_back(reveal);
  e->last = UnixNow();
  Status saved = Save();
  if (!saved.ok()) e->reveals.pop_back();
  return saved;
}

nlohmann::json LedgerEntryToJson(const LedgerEntry& e) {
  const auto number = [](double v) { return std::isinf(v) ? nlohmann::json() : nlohmann::json(v); };
  nlohmann::json dp;
  if (e.dp) {
    dp = {{"accountant", e.accountant},
          {"noise_multiplier", e.noise_multiplier},
          {"sample_rate", e.sample_rate},
          {"steps", e.steps},
          {"planned_steps", e.planned_steps}};
  }
  nlohmann::json reveals = nlohmann::json::array();
  for (const secure::SecAggReveal& r : e.reveals) {
    reveals.push_back({{"round", r.round}, {"model", r.origin}, {"survivors", r.survivors}});
  }
  return {{"dataset", e.dataset},
          {"run_id", e.run_id},
          {"job_digest", e.job_digest},
          {"statistics_digest", e.statistics_digest},
          {"dp", dp},
          {"epsilon", number(e.epsilon)},
          {"planned_epsilon", number(e.planned_epsilon)},
          {"delta", e.delta},
          {"evaluations", e.evaluations},
          {"secure_aggregation_reveals", reveals},
          {"first", e.first},
          {"last", e.last}};
}

Status PrivacyGuard::Save() const {
  if (ledger_path_.empty()) return absl::OkStatus();  // in memory
  nlohmann::json entries = nlohmann::json::array();
  for (const LedgerEntry& e : entries_) entries.push_back(LedgerEntryToJson(e));
  // Every save has a new generation: an older copy put back has a lower one.
  const int64_t next = generation_ + 1;
  const int64_t audited = audit_entries_ ? audit_entries_() : 0;
  nlohmann::json j = {{"version", kLedgerVersion}, {"generation", next}, {"entries", entries}};
  if (audit_entries_) j["audit_entries"] = audited;
  const std::string folder = std::filesystem::path(ledger_path_).parent_path().string();
  if (!folder.empty()) FEDSILO_RETURN_IF_ERROR(MakePrivateDir(folder));
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(ledger_path_, j.dump(1) + "\n"));
  generation_ = next;
  if (audit_entries_) audited_entries_ = audited;
  if (saved_) saved_(next);
  return absl::OkStatus();
}

int64_t PrivacyGuard::audited_entries() const {
  MutexLock lock(&mu_);
  return audited_entries_;
}

int64_t PrivacyGuard::generation() const {
  MutexLock lock(&mu_);
  return generation_;
}

void PrivacyGuard::SetAuditTrail(std::function<int64_t()> entries,
                                 std::function<void(int64_t)> saved) {
  MutexLock lock(&mu_);
  audit_entries_ = std::move(entries);
  saved_ = std::move(saved);
}

}  // namespace fedsilo::silo
