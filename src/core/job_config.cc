#include "core/job_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/file_util.h"
#include "core/seeded_shuffle.h"

namespace fedsilo {

absl::string_view PartitionSchemeName(PartitionScheme scheme) {
  switch (scheme) {
    case PartitionScheme::kIid:
      return "iid";
    case PartitionScheme::kDirichlet:
      return "dirichlet";
    case PartitionScheme::kShards:
      return "shards";
  }
  return "?";
}

absl::string_view DpModeName(DpMode mode) {
  switch (mode) {
    case DpMode::kLocal:
      return "local";
    case DpMode::kCentral:
      return "central";
    default:
      return "none";
  }
}

bool IsBuiltinDataset(absl::string_view name) {
  return std::find(std::begin(kKnownDatasets), std::end(kKnownDatasets), name) !=
         std::end(kKnownDatasets);
}

absl::string_view ScaleKindName(ScaleKind kind) {
  switch (kind) {
    case ScaleKind::kNone:
      return "none";
    case ScaleKind::kStandard:
      return "standard";
    case ScaleKind::kMinMax:
      return "minmax";
  }
  return "?";
}

double FeatureStatistics::Fill(size_t i) const { return count[i] > 0 ? mean[i] : 0.0; }

double FeatureStatistics::Center(size_t i, ScaleKind scale) const {
  switch (scale) {
    case ScaleKind::kNone:
      return 0;
    case ScaleKind::kStandard:
      return Fill(i);
    case ScaleKind::kMinMax:
      return count[i] > 0 && has_min_max() ? min[i] : 0.0;
  }
  return 0;
}

double FeatureStatistics::Divisor(size_t i, ScaleKind scale) const {
  double d = 1;
  if (scale == ScaleKind::kStandard) d = std[i];
  if (scale == ScaleKind::kMinMax) d = has_min_max() ? max[i] - min[i] : 1.0;
  return count[i] > 0 && d > 0 ? d : 1.0;
}

absl::string_view ModelKindName(ModelKind kind) {
  switch (kind) {
    case ModelKind::kLogistic:
      return "logistic";
    case ModelKind::kMlp:
      return "mlp";
    case ModelKind::kCnn:
      return "cnn";
    case ModelKind::kTorchScript:
      return "torchscript";
  }
  return "?";
}

StatusOr<std::string> ShippedModuleDigest(absl::string_view torchscript) {
  absl::string_view digest = torchscript;
  if (!absl::ConsumePrefix(&digest, kShippedModulePrefix)) return std::string();
  if (digest.size() != 64 || digest.find_first_not_of("0123456789abcdef") != digest.npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", torchscript, "' is not ", kShippedModulePrefix, "<64 hex digits>"));
  }
  return std::string(digest);
}

std::string ShippedModulePath(const std::string& dir, absl::string_view digest) {
  return absl::StrCat(dir, "/", digest, ".pt");
}

absl::string_view OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kAdam:
      return "adam";
  }
  return "?";
}

std::vector<std::vector<int64_t>> VerticalBatches(const JobConfig& job, int round,
                                                  int64_t train_rows) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(0, train_rows)));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(job.seed * 1000003 + static_cast<uint64_t>(round));
  const size_t batch = static_cast<size_t>(std::max(1, job.training.batch_size));
  std::vector<std::vector<int64_t>> batches;
  for (int epoch = 0; epoch < job.training.local_epochs; ++epoch) {
    SeededShuffle(order, rng);
    for (size_t begin = 0; begin < order.size(); begin += batch) {
      batches.emplace_back(order.begin() + begin,
                           order.begin() + std::min(order.size(), begin + batch));
    }
  }
  return batches;
}

std::string SiloCatalog(const DataConfig& data, const std::string& silo) {
  std::string path = data.catalog;
  if (const size_t at = path.find("{silo}"); at != std::string::npos) path.replace(at, 6, silo);
  return path;
}

absl::string_view JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kHorizontal:
      return "horizontal";
    case JobKind::kVertical:
      return "vertical";
  }
  return "?";
}

bool IsValidSiloName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

bool IsValidRunId(absl::string_view id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

int EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

int SilosPerRound(const FederationConfig& federation) {
  const int all = static_cast<int>(federation.silos.size());
  const int share = static_cast<int>(std::ceil(federation.fraction * static_cast<double>(all)));
  return std::min(all, std::max(share, federation.min_silos));
}

const StrategyTraits* FindStrategy(absl::string_view name) {
  for (const StrategyTraits& s : kStrategies) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const StrategyTraits& TraitsOf(const StrategyConfig& strategy) {
  const StrategyTraits* found = FindStrategy(strategy.name);
  return found != nullptr ? *found : kStrategies[0];
}

double RoundLearningRate(const TrainingConfig& training, int round) {
  return training.learning_rate * std::pow(training.lr_decay, std::max(round, 1) - 1);
}

StatusOr<ConfigOverride> ParseOverride(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set '", text, "': expected key=value, e.g. training.rounds=3"));
  }
  return ConfigOverride{std::string(text.substr(0, eq)), std::string(text.substr(eq + 1))};
}

StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                  const std::vector<ConfigOverride>& overrides) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  FEDSILO_ASSIGN_OR_RETURN(JobConfig config, ParseJobConfig(text, path, overrides));
  if (config.name.empty()) config.name = std::filesystem::path(path).stem().string();
  // From the file: beside the file. From --set: from where the command runs.
  const auto resolve = [&](const std::string& key, std::string& value,
                           absl::string_view what) -> Status {
    if (value.empty()) return absl::OkStatus();
    bool from_flag = false;
    for (const ConfigOverride& o : overrides) from_flag = from_flag || o.key == key;
    std::filesystem::path p(value);
    if (p.is_relative() && !from_flag) p = std::filesystem::path(path).parent_path() / p;
    std::error_code ec;
    const std::filesystem::path absolute = std::filesystem::absolute(p, ec).lexically_normal();
    if (ec || !std::filesystem::is_regular_file(absolute, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(from_flag ? "--set " + key : path + ": " + key,
                                                     ": ", absolute.string(), ": no such file (",
                                                     what, ")"));
    }
    value = absolute.string();
    return absl::OkStatus();
  };
  FEDSILO_RETURN_IF_ERROR(resolve("model.torchscript", config.model.torchscript,
                                  "a TorchScript module saved with torch.jit.save"));
  // A catalog per silo ("parties/{silo}.yaml"): each must be there.
  if (config.data.catalog.find("{silo}") != std::string::npos) {
    for (const std::string& silo : config.federation.silos) {
      std::string one = SiloCatalog(config.data, silo);
      FEDSILO_RETURN_IF_ERROR(
          resolve("data.catalog", one, absl::StrCat("silo '", silo, "''s dataset catalog")));
    }
    std::filesystem::path p(config.data.catalog);
    const bool from_flag =
        std::any_of(overrides.begin(), overrides.end(),
                    [](const ConfigOverride& o) { return o.key == "data.catalog"; });
    if (p.is_relative() && !from_flag) p = std::filesystem::path(path).parent_path() / p;
    config.data.catalog = std::filesystem::absolute(p).lexically_normal().string();
    return config;
  }
  FEDSILO_RETURN_IF_ERROR(
      resolve("data.catalog", config.data.catalog, "a dataset catalog, datasets.yaml"));
  return config;
}

namespace {
void Flatten(const YAML::Node& node, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      Flatten(kv.second, prefix.empty() ? key : absl::StrCat(prefix, ".", key), out);
    }
    return;
  }
  if (node.IsScalar()) {
    out.emplace_back(prefix, node.Scalar());
    return;
  }
  YAML::Emitter flow;
  flow << YAML::Flow << node;
  out.emplace_back(prefix, flow.c_str());
}
}  // namespace

std::vector<std::pair<std::string, std::string>> FlattenJobConfig(const JobConfig& config) {
  std::vector<std::pair<std::string, std::string>> out;
  Flatten(YAML::Load(JobConfigToYaml(config)), "", out);
  return out;
}

}  // namespace fedsilo
