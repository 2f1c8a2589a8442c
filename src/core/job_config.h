// JobConfig: a federated training job as written in a job YAML file, after
// defaults are filled in and every value is checked. Every key, its type,
// default and range is in one table (core/job_schema.h), and from it in
// docs/job-reference.md.
#ifndef FEDSILO_CORE_JOB_CONFIG_H_
#define FEDSILO_CORE_JOB_CONFIG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo {

enum class PartitionScheme { kIid, kDirichlet, kShards };
enum class ModelKind { kLogistic, kMlp, kCnn, kTorchScript };
enum class OptimizerKind { kSgd, kAdam };
// horizontal: every silo holds the same columns about different people
// (federated averaging); vertical: every silo (party) holds different
// columns about the same people (private set intersection, then split
// learning; docs/vertical.md).
enum class JobKind { kHorizontal, kVertical };

absl::string_view PartitionSchemeName(PartitionScheme scheme);
absl::string_view ModelKindName(ModelKind kind);
absl::string_view OptimizerKindName(OptimizerKind kind);
absl::string_view JobKindName(JobKind kind);

// Built-in data sets a job can name; `scripts/setup` fetches them.
inline constexpr absl::string_view kKnownDatasets[] = {"mnist", "digits", "breast_cancer"};
bool IsBuiltinDataset(absl::string_view name);

struct DataConfig {
  // Required: a built-in data set, or a name the silos' dataset catalogs
  // (datasets.yaml) map to their own files.
  std::string dataset;
  // Simulation only: the dataset catalog every simulated silo uses, with
  // "{silo}" in a path replaced by the silo's name. "{silo}" in this path
  // itself gives each silo a catalog of its own. A relative path in a job
  // file is relative to the file's folder (LoadJobConfig makes it absolute).
  std::string catalog;
  double test_fraction = 0.2;       // global held-out share, for sets without a test split
  double silo_test_fraction = 0.1;  // share of each silo's partition kept as its local test set
  PartitionScheme partition = PartitionScheme::kIid;
  double alpha = 0.5;       // Dirichlet concentration
  int shards_per_silo = 2;  // shards scheme
};

// The catalog silo `silo` reads in simulation: data.catalog, with "{silo}"
// in it (one catalog per silo) replaced by the silo's name.
std::string SiloCatalog(const DataConfig& data, const std::string& silo);

struct ModelConfig {
  ModelKind kind = ModelKind::kMlp;
  std::vector<int> hidden = {200, 200};  // MLP hidden layer widths
  // A TorchScript module file (torch.jit.script / trace, then .save()); sets
  // kind to kTorchScript. A relative path in a job file is relative to the
  // file's folder (LoadJobConfig makes it absolute).
  std::string torchscript;
};

// How a job names a TorchScript module that came with it: by its SHA-256,
// "sha256:<64 lowercase hex digits>". The orchestrator and the silos keep such
// modules as <state>/models/<hex>.pt.
inline constexpr absl::string_view kShippedModulePrefix = "sha256:";
// The hex digest of such a name; "" for anything without the prefix (a path);
// InvalidArgument for a name with the prefix but no valid digest.
StatusOr<std::string> ShippedModuleDigest(absl::string_view torchscript);
// <dir>/<hex>.pt, the file that keeps a shipped module.
std::string ShippedModulePath(const std::string& dir, absl::string_view digest);

enum class ScaleKind { kNone, kStandard, kMinMax };
absl::string_view ScaleKindName(ScaleKind kind);

// Per-feature statistics of the silos' training rows, computed federatedly
// (orchestrator/federated_statistics.h): silos send counts, sums, sums of
// squares and ranges, never rows. Features are named by their column, or
// "column=value" for a one-hot category. Missing values are not counted.
struct FeatureStatistics {
  std::string label;  // the label column
  int64_t rows = 0;
  std::vector<int64_t> class_counts;  // rows per class; its size is the number of classes
  std::vector<std::string> features;
  std::vector<int64_t> count;  // present values per feature
  std::vector<double> mean, std;
  // Empty unless every silo's policy shares its features' minima and maxima
  // (single records' values: statistics.share_min_max).
  std::vector<double> min, max;
  // Image data (a silo's IDX folder): one example's shape, e.g. [1, 28, 28],
  // and a single feature, "pixel", over all pixel values. Empty for tables,
  // whose examples are the features.
  std::vector<int64_t> shape;

  bool empty() const { return features.empty(); }
  bool has_min_max() const { return !min.empty(); }
  // The value a missing entry of feature i takes (its mean, or 0 when the
  // feature was never present), and x -> (x - center) / divisor for the job's
  // scaling (center 0 and divisor 1 without scaling, and divisor 1 where the
  // feature is constant).
  double Fill(size_t i) const;
  double Center(size_t i, ScaleKind scale) const;
  double Divisor(size_t i, ScaleKind scale) const;
};

// How silos prepare tabular data (datasets from their catalogs' `csv:`
// entries) before training, and predict before inference.
struct PreprocessConfig {
  ScaleKind scale = ScaleKind::kNone;
  // One-hot vocabularies of categorical columns, fixed by the job so that
  // every silo encodes them alike: column -> values, in order.
  std::vector<std::pair<std::string, std::vector<std::string>>> categories;
  // Filled in by the federated statistics step before the first round (or
  // given); every silo and `fedsilo predict` scale with these.
  FeatureStatistics statistics;

  bool empty() const {
    return scale == ScaleKind::kNone && categories.empty() && statistics.empty();
  }
};

struct TrainingConfig {
  int rounds = 10;
  int local_epochs = 1;
  int batch_size = 32;
  OptimizerKind optimizer = OptimizerKind::kSgd;
  double learning_rate = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
  // Round r (from 1) trains with learning_rate x lr_decay^(r - 1).
  double lr_decay = 1.0;
};

// The learning rate of `round` (from 1).
double RoundLearningRate(const TrainingConfig& training, int round);

struct FederationConfig {
  std::vector<std::string> silos;  // names; `silos: 5` means silo-1 ... silo-5
  double fraction = 1.0;           // share of silos sampled each round
  int min_silos = 1;               // a round fails with fewer answers
  int round_timeout = 600;         // seconds a remote silo may take for one round
  int wait_for_silos = 120;        // seconds a job waits for its silos to connect
  // A round that fails because silos left or did not answer in time is run
  // again (from the same global model, once its silos are back, waiting up to
  // wait_for_silos) this many times before the job fails.
  int round_retries = 2;
};

// What the job's rules, the orchestrator and the silos need to know of an
// aggregation strategy (docs/strategies.md), by name. The strategies
// themselves are made from the name by one registry in strategy/
// (CreateStrategy), which a test holds to this list.
struct StrategyTraits {
  absl::string_view name;
  // The default server_learning_rate; negative: 1 - server_momentum.
  double default_server_learning_rate = 1.0;
  // Its step is the mean of the updates: central DP's noise (calibrated for
  // that mean) applies.
  bool mean_of_updates = false;
  // A robust rule: it needs every update of a round at once (the
  // orchestrator keeps them all: memory O(model x silos)), so it cannot run
  // under secure aggregation, which only reveals the sum.
  bool needs_all_updates = false;
  // Krum's bound: more than 2 x byzantine + 2 silos a round.
  bool byzantine_bound = false;
  // The silos add (mu/2) |w - w_global|^2 to their objective (FedProx).
  bool proximal = false;
  // The silos keep control variates between rounds (SCAFFOLD): a round
  // cannot simply be run again, and the variates travel unprotected.
  bool control_variates = false;
};

inline constexpr StrategyTraits kStrategies[] = {
    {"fedavg", 1.0, /*mean_of_updates=*/true},
    {"fedavgm", -1.0},
    {"fedprox", 1.0, /*mean_of_updates=*/true, false, false, /*proximal=*/true},
    {"scaffold", 1.0, false, false, false, false, /*control_variates=*/true},
    {"fedadam", 0.03},
    {"fedyogi", 0.03},
    {"fedadagrad", 0.1},
    {"median", 1.0, false, /*needs_all_updates=*/true},
    {"trimmed_mean", 1.0, false, /*needs_all_updates=*/true},
    {"krum", 1.0, false, /*needs_all_updates=*/true, /*byzantine_bound=*/true},
    {"multi_krum", 1.0, false, /*needs_all_updates=*/true, /*byzantine_bound=*/true},
};

// The traits of `name`; nullptr for a name no strategy has (ParseJobConfig
// refuses such a job).
const StrategyTraits* FindStrategy(absl::string_view name);

// Silos sampled each round: ceil(fraction x silos), at least min_silos and at
// most all of them.
int SilosPerRound(const FederationConfig& federation);

struct StrategyConfig {
  std::string name = "fedavg";
  // new global = global + rate x (the strategy's step); default 1.0, and
  // 0.03 for fedadam and fedyogi, 0.1 for fedadagrad, 1 - server_momentum
  // for fedavgm.
  double server_learning_rate = 1.0;
  double server_momentum = 0.9;  // fedavgm
  double beta1 = 0.9;            // fedadam, fedyogi, fedadagrad: first moment
  double beta2 = 0.99;           // fedadam, fedyogi: second moment
  double tau = 1e-3;             // adaptive optimizers: adaptivity (epsilon)
  double proximal_mu = 0.01;     // fedprox: weight of (mu/2) |w - w_global|^2
  double trim_fraction = 0.1;    // trimmed_mean: share cut from each end
  // krum, multi_krum: silos assumed hostile (f); -1 = the most Krum
  // tolerates with the silos sampled per round, (n - 3) / 2 rounded down.
  int byzantine = -1;
  int multi_krum_keep = 0;     // multi_krum: updates averaged; 0 = n - f
  double max_update_norm = 0;  // > 0: L2-clip every update first (any strategy)
};

// The traits of a checked job's strategy (those of fedavg for an unknown
// name, which a checked job never has).
const StrategyTraits& TraitsOf(const StrategyConfig& strategy);

// Differential privacy. `local`: DP-SGD in each silo's trainer (sample-level
// DP for that silo's records): Poisson sampling with rate batch_size / N,
// per-example clipping to max_grad_norm, Gaussian noise of standard deviation
// noise_multiplier x max_grad_norm on the summed gradients. Give either
// noise_multiplier or target_epsilon (then each silo solves for the noise that
// spends target_epsilon over the whole job at delta). `central`: DP-FedAvg at
// the orchestrator (silo-level DP; see privacy/central_dp.h): updates clipped
// to clip_norm, equal weights, noise_multiplier x clip_norm noise on the sum.
enum class DpMode { kNone, kLocal, kCentral };
absl::string_view DpModeName(DpMode mode);

struct DpConfig {
  DpMode mode = DpMode::kNone;
  double noise_multiplier = 0;  // > 0, or 0 when target_epsilon is given
  double target_epsilon = 0;    // > 0, or 0 when noise_multiplier is given
  double max_grad_norm = 1.0;
  double delta = 1e-5;
  // central only
  double clip_norm = 1.0;          // initial update clipping bound S
  bool adaptive_clipping = false;  // follow a quantile of the update norms
  double target_quantile = 0.5;
  double clip_learning_rate = 0.2;
};

// Secure aggregation (secure/secagg.h): each silo masks a fixed-point copy of
// its update so that the orchestrator learns only the sum over the silos.
// `privacy.secure_aggregation: true` takes every default.
struct SecureAggregationConfig {
  bool enabled = false;
  // Silos that must stay until the end of a round for its sum to be
  // recovered; 0 = two thirds of the silos sampled (rounded up), at least 2.
  int threshold = 0;
  double clip_range = 4.0;  // update values are clipped to [-clip_range, clip_range]
  int bits = 24;            // fixed-point bits per value, sign included
  // A silo's weight is its examples / max_weight (a silo with more is
  // refused); ignored with privacy.dp.mode central (equal weights).
  double max_weight = 100000;
};

struct PrivacyConfig {
  DpConfig dp;
  SecureAggregationConfig secure_aggregation;
};

struct CheckpointConfig {
  int every = 1;  // checkpoint the global model every N rounds; 0 = never
};

// Optional export of a run to an MLflow tracking server, through its REST API.
struct MlflowConfig {
  std::string uri;         // "http(s)://host:port[/prefix]"; empty = no export
  std::string experiment;  // MLflow experiment; empty = the job's `experiment`
  bool log_model = true;   // upload the final model (and the job) as artifacts
  int wait = 30;           // seconds the end of a run waits for MLflow to take the backlog
};

struct TrackingConfig {
  MlflowConfig mlflow;
};

// A vertical job's split model. Every party runs a bottom model on its own
// columns (the built-in MLP of model.hidden, ending in a layer of cut_width
// units with ReLU); the label owner runs the top model (top_hidden, then one
// output per class) on the parties' cut-layer outputs, concatenated in the
// order of federation.silos, and sends each party the gradient of its part.
struct VerticalConfig {
  std::string label_owner;      // required: the party whose table holds the label
  int cut_width = 8;            // each bottom model's output width
  std::vector<int> top_hidden;  // the top model's hidden widths; empty: linear
  // Label leakage mitigation: Gaussian noise, of this standard deviation
  // times the batch's gradient RMS, on every gradient the label owner sends
  // (0: none).
  double gradient_noise = 0;
  // A run whose split model (each party's kept part) scores this job's rows
  // instead of training a new one: the parties align their rows as for
  // training, every aligned row is scored once, and the label owner keeps
  // the predictions. Empty: train.
  std::string predict_with;
};

struct JobConfig {
  std::string name;
  JobKind kind = JobKind::kHorizontal;
  // Groups runs for comparison (`fedsilo runs list --experiment`, the
  // dashboard, MLflow's experiment).
  std::string experiment = "default";
  uint64_t seed = 0;
  DataConfig data;
  ModelConfig model;
  PreprocessConfig preprocess;
  TrainingConfig training;
  FederationConfig federation;
  StrategyConfig strategy;
  PrivacyConfig privacy;
  CheckpointConfig checkpoint;
  TrackingConfig tracking;
  VerticalConfig vertical;  // kind vertical only
};

// A vertical job's batches in round `round` (from 1): positions into its
// `train_rows` aligned training rows, training.local_epochs passes each
// shuffled (SeededShuffle) from the job's seed and the round, in
// training.batch_size slices. Every party and the orchestrator compute the
// same, so no one can ask for other rows.
std::vector<std::vector<int64_t>> VerticalBatches(const JobConfig& job, int round,
                                                  int64_t train_rows);

// One `--set key=value` override; the value is parsed as YAML (so lists work).
struct ConfigOverride {
  std::string key;  // dotted path, e.g. "training.rounds"
  std::string value;
};

// Parses "key=value". InvalidArgument if there is no '=' or the key is empty.
StatusOr<ConfigOverride> ParseOverride(absl::string_view text);

// Parses and checks a job. `source` names the text in errors ("job.yaml").
// Errors are InvalidArgument and name the key, e.g.
//   "job.yaml:7: training.rounds: must be an integer >= 1, got 0"
//   "job.yaml:3: unknown key 'trainig' (did you mean 'training'?)"
StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml_text, absl::string_view source,
                                   const std::vector<ConfigOverride>& overrides = {});

// Reads the file and parses it; the job name defaults to the file's stem.
StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                  const std::vector<ConfigOverride>& overrides = {});

// The fully resolved job (every key, defaults included) as YAML. Parsing the
// result gives back an equal JobConfig.
std::string JobConfigToYaml(const JobConfig& config);

// The resolved job as dotted keys and their YAML values, in file order:
// {"name", "mnist"}, {"training.rounds", "10"}, {"model.hidden", "[200, 200]"}.
// Lists stay one value. For comparing runs and for MLflow's parameters.
std::vector<std::pair<std::string, std::string>> FlattenJobConfig(const JobConfig& config);

// Silo and participant names: 1-64 letters, digits, '-', '_' or '.'.
bool IsValidSiloName(absl::string_view name);
// Run ids, as they name folders: 1-128 letters, digits, '-', '_' or '.',
// but not "." or "..".
bool IsValidRunId(absl::string_view id);

// Levenshtein distance; used to suggest the nearest valid key or value.
int EditDistance(absl::string_view a, absl::string_view b);

}  // namespace fedsilo

#endif  // FEDSILO_CORE_JOB_CONFIG_H_
