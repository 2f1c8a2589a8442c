#include "core/job_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace fedsilo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kMinimal[] = R"(
data:
  dataset: digits
model:
  name: mlp
federation:
  silos: 3
)";

TEST(JobConfigTest, MinimalJobGetsDefaults) {
  StatusOr<JobConfig> c = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->data.dataset, "digits");
  EXPECT_EQ(c->data.partition, PartitionScheme::kIid);
  EXPECT_EQ(c->model.kind, ModelKind::kMlp);
  EXPECT_EQ(c->model.hidden, (std::vector<int>{200, 200}));
  EXPECT_EQ(c->training.rounds, 10);
  EXPECT_EQ(c->training.optimizer, OptimizerKind::kSgd);
  EXPECT_EQ(c->federation.silos, (std::vector<std::string>{"silo-1", "silo-2", "silo-3"}));
  EXPECT_EQ(c->strategy.name, "fedavg");
  EXPECT_DOUBLE_EQ(c->strategy.server_learning_rate, 1.0);
  EXPECT_EQ(c->checkpoint.every, 1);
  EXPECT_EQ(c->experiment, "default");
}

TEST(JobConfigTest, ExperimentGroupsRunsAndFlatteningListsEveryKey) {
  StatusOr<JobConfig> c = ParseJobConfig(kMinimal, "job.yaml", {{"experiment", "lr-sweep"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->experiment, "lr-sweep");
  const auto flat = FlattenJobConfig(*c);
  std::map<std::string, std::string> by_key(flat.begin(), flat.end());
  EXPECT_EQ(by_key.size(), flat.size());  // no key twice
  EXPECT_EQ(by_key["experiment"], "lr-sweep");
  EXPECT_EQ(by_key["training.rounds"], "10");
  EXPECT_EQ(by_key["data.dataset"], "digits");
  EXPECT_EQ(by_key["model.hidden"], "[200, 200]");
  EXPECT_EQ(by_key["strategy.name"], "fedavg");
  EXPECT_EQ(by_key.count("training"), 0u);  // sections are not values
  StatusOr<JobConfig> empty = ParseJobConfig(kMinimal, "job.yaml", {{"experiment", "''"}});
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("experiment: must be a non-empty string"));
}

TEST(JobConfigTest, ReadsEveryKey) {
  StatusOr<JobConfig> c = ParseJobConfig(R"(
name: full
seed: 7
data: {dataset: mnist, test_fraction: 0.3, silo_test_fraction: 0, partition: shards,
       alpha: 0.1, shards_per_silo: 3}
model: {name: cnn, hidden: [10, 20]}
training: {rounds: 4, local_epochs: 2, batch_size: 8, optimizer: adam, learning_rate: 0.001,
           momentum: 0.5, weight_decay: 0.0001}
federation: {silos: [a, b, c], fraction: 0.5, min_silos: 2}
strategy: {name: fedavg, server_learning_rate: 0.7}
checkpoint: {every: 0}
)",
                                         "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "full");
  EXPECT_EQ(c->seed, 7u);
  EXPECT_EQ(c->data.partition, PartitionScheme::kShards);
  EXPECT_EQ(c->data.shards_per_silo, 3);
  EXPECT_DOUBLE_EQ(c->data.silo_test_fraction, 0.0);
  EXPECT_EQ(c->model.kind, ModelKind::kCnn);
  EXPECT_EQ(c->training.optimizer, OptimizerKind::kAdam);
  EXPECT_DOUBLE_EQ(c->training.weight_decay, 0.0001);
  EXPECT_EQ(c->federation.silos, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c->federation.min_silos, 2);
  EXPECT_DOUBLE_EQ(c->strategy.server_learning_rate, 0.7);
  EXPECT_EQ(c->checkpoint.every, 0);
}

TEST(JobConfigTest, PreprocessingAndItsStatisticsSurviveTheResolvedJobExactly) {
  StatusOr<JobConfig> c = ParseJobConfig(R"(
data: {dataset: transactions}
federation: {silos: [east, west]}
preprocess:
  scale: minmax
  categories: {merchant: [atm, online], country: [de, fr]}
)",
                                         "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->data.dataset, "transactions");
  EXPECT_EQ(c->preprocess.scale, ScaleKind::kMinMax);
  ASSERT_EQ(c->preprocess.categories.size(), 2u);
  EXPECT_EQ(c->preprocess.categories[1].first, "country");
  FeatureStatistics& st = c->preprocess.statistics;
  st.label = "fraud";
  st.rows = 3;
  st.class_counts = {2, 1};
  st.features = {"amount", "merchant=atm"};
  st.count = {3, 2};
  st.mean = {0.1 + 0.2, 1.0 / 3.0};
  st.std = {1e-300, 7.0};
  st.min = {-1.5, 0};
  st.max = {12345.678901234567, 1};
  st.shape = {1, 2, 3};
  StatusOr<JobConfig> again = ParseJobConfig(JobConfigToYaml(*c), "resolved.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << JobConfigToYaml(*c);
  const FeatureStatistics& back = again->preprocess.statistics;
  EXPECT_EQ(back.features, st.features);
  EXPECT_EQ(back.class_counts, st.class_counts);
  EXPECT_EQ(back.mean, st.mean);  // bit for bit: silos and predict scale alike
  EXPECT_EQ(back.std, st.std);
  EXPECT_EQ(back.max, st.max);
  EXPECT_EQ(back.shape, st.shape);
  EXPECT_EQ(JobConfigToYaml(*again), JobConfigToYaml(*c));
  EXPECT_DOUBLE_EQ(back.Center(0, ScaleKind::kMinMax), -1.5);
  EXPECT_DOUBLE_EQ(back.Divisor(1, ScaleKind::kStandard), 7.0);
  EXPECT_DOUBLE_EQ(back.Divisor(0, ScaleKind::kNone), 1.0);
  // Statistics whose minima and maxima the silos kept: none written or read.
  st.min.clear();
  st.max.clear();
  const std::string withheld = JobConfigToYaml(*c);
  EXPECT_EQ(withheld.find("max:"), std::string::npos);
  StatusOr<JobConfig> kept = ParseJobConfig(withheld, "resolved.yaml");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_FALSE(kept->preprocess.statistics.has_min_max());
  EXPECT_EQ(kept->preprocess.statistics.mean, st.mean);
  EXPECT_FALSE(
      ParseJobConfig(absl::StrReplaceAll(JobConfigToYaml(*again), {{"    max:", "    maxi:"}}),
                     "half.yaml")
          .ok());
  // Jobs without preprocessing write no preprocess section.
  StatusOr<JobConfig> plain =
      ParseJobConfig("data: {dataset: digits}\nfederation: {silos: 2}\n", "job.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(JobConfigToYaml(*plain), Not(HasSubstr("preprocess")));
}

struct BadCase {
  const char* yaml;
  const char* expected;  // substring of the error
};

class JobConfigErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(JobConfigErrorTest, NamesTheKeyAndTheProblem) {
  StatusOr<JobConfig> c = ParseJobConfig(GetParam().yaml, "job.yaml");
  ASSERT_FALSE(c.ok()) << "accepted:\n" << GetParam().yaml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(GetParam().expected));
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml"));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, JobConfigErrorTest,
    ::testing::Values(
        BadCase{
            "data: {dataset: digits}\nmodel: {name: mlp}\nfederation: {silos: 2}\ntrainig: {}\n",
            "job.yaml:4: unknown key 'trainig' (did you mean 'training'?)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntraining:\n  round: 3\n",
                "unknown key 'training.round' (did you mean 'training.rounds'?)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntraining:\n  rounds: 0\n",
                "job.yaml:4: training.rounds: must be an integer in [1, 100000], got 0"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntraining:\n  rounds: many\n",
                "training.rounds: must be an integer in [1, 100000], got 'many'"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntraining: {learning_rate: -1}\n",
                "training.learning_rate: must be a number in (0, 100], got -1"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntraining: {momentum: 1}\n",
                "training.momentum: must be a number in [0, 1)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntraining: {optimizer: adamw}\n",
                "training.optimizer: unknown value 'adamw' (did you mean 'adam'?)"},
        BadCase{"data: {dataset: mnsit}\nfederation: {silos: 2}\n",
                "data.dataset: unknown value 'mnsit' (did you mean 'mnist'?)"},
        BadCase{"federation: {silos: 2}\n", "data.dataset: is required"},
        BadCase{"data: {dataset: 'my data'}\nfederation: {silos: 2}\n",
                "data.dataset: 'my data' is not a valid data set name"},
        BadCase{"data: {dataset: t}\nfederation: {silos: 2}\npreprocess: {scale: zscore}\n",
                "preprocess.scale: unknown value 'zscore'"},
        BadCase{"data: {dataset: t}\nfederation: {silos: 2}\npreprocess: {categories: [a]}\n",
                "preprocess.categories: must map each categorical column"},
        BadCase{"data: {dataset: t}\nfederation: {silos: 2}\n"
                "preprocess: {categories: {m: [a, b, a]}}\n",
                "preprocess.categories.m: lists 'a' twice"},
        BadCase{"data: {dataset: t}\nfederation: {silos: 2}\n"
                "preprocess: {statistics: {label: y, rows: 1, class_counts: [1, 0], "
                "features: [a, b], count: [1, 1], mean: [0], std: [0, 0], min: [0, 0], "
                "max: [0, 0]}}\n",
                "preprocess.statistics.mean: has 1 values for 2 features"},
        BadCase{"data: {dataset: digits}\n", "federation.silos: is required"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: [a, a]}\n",
                "silo 'a' is listed twice"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: ['a b']}\n", "silo name 'a b'"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2, min_silos: 3}\n",
                "federation.min_silos: is 3 but the federation has only 2 silos"},
        BadCase{"data: {dataset: digits, partition: dirichlet, alpha: 0}\nfederation: {silos: 2}\n",
                "data.alpha: must be a number in (0, inf]"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nmodel: {hidden: [64, 0]}\n",
                "model.hidden: each layer width"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nstrategy: {name: fedproxx}\n",
                "strategy.name: unknown value 'fedproxx'"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nprivacy: {dp: {mode: local}}\n",
                "privacy.dp: mode local needs exactly one of noise_multiplier and target_epsilon"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "privacy: {dp: {mode: local, noise_multiplier: 1, target_epsilon: 3}}\n",
                "privacy.dp: mode local needs exactly one"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "privacy: {dp: {noise_multiplier: 1}}\n",
                "privacy.dp.mode: is none, but noise_multiplier or target_epsilon is set"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "privacy: {dp: {mode: locl, noise_multiplier: 1}}\n",
                "privacy.dp.mode: unknown value 'locl' (did you mean 'local'?)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "privacy: {dp: {mode: local, noise_multiplier: 1, delta: 1}}\n",
                "privacy.dp.delta: must be a number in (0, 1)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nprivacy: {dp: {max_norm: 1}}\n",
                "unknown key 'privacy.dp.max_norm'; valid keys here: mode, noise_multiplier"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nprivacy: {dp: {mode: central}}\n",
                "privacy.dp: mode central needs noise_multiplier (> 0)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "privacy: {dp: {mode: central, noise_multiplier: 1, adaptive_clipping: maybe}}\n",
                "privacy.dp.adaptive_clipping: must be true or false"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\n"
                "privacy: {secure_aggregation: {threshold: 1}}\n",
                "privacy.secure_aggregation.threshold: must be 0 (automatic) or at least 2"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\n"
                "privacy: {secure_aggregation: {threshold: 4}}\n",
                "privacy.secure_aggregation.threshold: is 4, more than the job's 3 silos"},
        // (Found by fuzzing: a mapping as a key once threw out of the parser.)
        BadCase{"{data: x}: 1\n", "a key must be a name, not a list or a mapping"},
        BadCase{"data: {[dataset]: digits}\n", "data: a key must be a name"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 4}\n"
                "privacy: {secure_aggregation: {threshold: 2}}\n",
                "privacy.secure_aggregation.threshold: is 2, not more than half of the 4 silos "
                "sampled each round"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 5, min_silos: 4}\n"
                "privacy: {secure_aggregation: {threshold: 3}}\n",
                "privacy.secure_aggregation.threshold: is 3, below federation.min_silos (4)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 1}\n"
                "privacy: {secure_aggregation: true}\n",
                "privacy.secure_aggregation: needs at least 2 silos"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\n"
                "privacy: {secure_aggregation: {bits: 40}}\n",
                "privacy.secure_aggregation.bits: must be an integer in [8, 30]"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\n"
                "privacy: {secure_aggregation: yes please}\n",
                "privacy.secure_aggregation: must be true or false"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\n"
                "privacy: {secure_aggregation: {treshold: 2}}\n",
                "unknown key 'privacy.secure_aggregation.treshold'"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 4}\nstrategy: {name: krum, "
                "byzantine: 1}\n",
                "strategy.byzantine: krum needs more than 2 x byzantine + 2 silos a round; the job "
                "has 4"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 4}\n"
                "strategy: {name: median}\nprivacy: {secure_aggregation: true}\n",
                "strategy 'median' needs every silo's update"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 4}\n"
                "strategy: {name: trimmed_mean, trim_fraction: 0.5}\n",
                "strategy.trim_fraction: must be a number in [0, 0.5)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 4}\nstrategy: {name: fedadam, beta2: "
                "1}\n",
                "strategy.beta2: must be a number in [0, 1)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "tracking: {mlflow: {uri: mlflow.example.org}}\n",
                "tracking.mlflow.uri: 'mlflow.example.org' is not an MLflow tracking server's"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "tracking: {mlflow: {experiment: x}}\n",
                "tracking.mlflow.uri: is required when tracking.mlflow is set"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "tracking: {mlflow: {uri: 'http://h:5000', wait: -1}}\n",
                "tracking.mlflow.wait: must be an integer in [0, 86400]"},
        // Central DP's noise is calibrated for the mean of clipped updates.
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\nstrategy: {name: fedadam}\n"
                "privacy: {dp: {mode: central, noise_multiplier: 1}}\n",
                "privacy.dp.mode: central adds its noise to the mean of the clipped updates, "
                "which strategy 'fedadam' does not apply"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 4}\nstrategy: {name: median}\n"
                "privacy: {dp: {mode: central, noise_multiplier: 1}}\n",
                "strategy 'median' does not apply; use strategy fedavg or fedprox, or mode local"},
        // SCAFFOLD's control variates would travel unprotected.
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nstrategy: {name: scaffold}\n"
                "privacy: {dp: {mode: local, noise_multiplier: 1}}\n",
                "strategy.name: scaffold is not supported with privacy.dp or secure_aggregation"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\nstrategy: {name: scaffold}\n"
                "privacy: {secure_aggregation: true}\n",
                "strategy.name: scaffold is not supported with privacy.dp or secure_aggregation"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 3}\nstrategy: {name: scaffold}\n"
                "privacy: {dp: {mode: central, noise_multiplier: 1}}\n",
                "privacy.dp.mode: central adds its noise to the mean of the clipped updates, "
                "which strategy 'scaffold' does not apply"},
        // Every robust rule needs the updates one by one.
        BadCase{"data: {dataset: digits}\nfederation: {silos: 6}\n"
                "strategy: {name: trimmed_mean}\nprivacy: {secure_aggregation: true}\n",
                "strategy 'trimmed_mean' needs every silo's update"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 6}\n"
                "strategy: {name: krum}\nprivacy: {secure_aggregation: true}\n",
                "strategy 'krum' needs every silo's update"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 6}\n"
                "strategy: {name: multi_krum}\nprivacy: {secure_aggregation: true}\n",
                "strategy 'multi_krum' needs every silo's update"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nstrategy: {name: scaffold}\n"
                "training: {optimizer: adam}\n",
                "strategy.name: scaffold needs training.optimizer sgd"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\ntracking: {mlfow: {}}\n",
                "unknown key 'tracking.mlfow' (did you mean 'tracking.mlflow'?)"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\n"
                "model: {name: mlp, torchscript: net.pt}\n",
                "model.name: is 'mlp', but model.torchscript names a model file"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nmodel: {name: torchscript}\n",
                "model.torchscript: is required with model.name torchscript"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nmodel: {torchscript: n.pt}\n"
                "privacy: {dp: {mode: local, noise_multiplier: 1}}\n",
                "privacy.dp.mode: local (DP-SGD) does not support model.torchscript"},
        BadCase{"data: [1, 2]\nfederation: {silos: 2}\n", "data: must be a mapping"},
        // Vertical jobs.
        BadCase{"kind: vertical\ndata: {dataset: customers}\nfederation: {silos: [bank, telco]}\n",
                "vertical.label_owner: is required with kind vertical"},
        BadCase{"kind: vertical\ndata: {dataset: customers}\nfederation: {silos: [bank, telco]}\n"
                "vertical: {label_owner: shop}\n",
                "vertical.label_owner: 'shop' is not a party of the job (federation.silos: bank, "
                "telco)"},
        BadCase{"kind: vertical\ndata: {dataset: digits}\nfederation: {silos: [bank]}\n"
                "vertical: {label_owner: bank}\n",
                "data.dataset: 'digits' is a built-in data set; a vertical job reads each party's "
                "own table"},
        BadCase{"kind: vertical\ndata: {dataset: customers}\nfederation: {silos: [bank, telco]}\n"
                "vertical: {label_owner: bank}\nmodel: {name: cnn}\n",
                "model.name: is 'cnn'; a vertical job's bottom models are mlp"},
        BadCase{"kind: vertical\ndata: {dataset: customers}\nfederation: {silos: [bank, telco]}\n"
                "vertical: {label_owner: bank}\nstrategy: {name: fedprox}\n",
                "strategy: does not apply to a vertical job"},
        BadCase{"kind: vertical\ndata: {dataset: customers}\nfederation: {silos: [bank, telco]}\n"
                "vertical: {label_owner: bank}\nprivacy: {secure_aggregation: true}\n",
                "privacy: differential privacy and secure aggregation protect averaged updates"},
        BadCase{
            "kind: vertical\ndata: {dataset: customers}\n"
            "federation: {silos: [bank, telco], fraction: 0.5}\nvertical: {label_owner: bank}\n",
            "federation.fraction: must be 1 for a vertical job"},
        BadCase{"data: {dataset: digits}\nfederation: {silos: 2}\nvertical: {cut_width: 4}\n",
                "vertical: is for vertical jobs, and this one is horizontal: add `kind: vertical`"},
        BadCase{"kind: vertical\ndata: {dataset: customers}\nfederation: {silos: [bank, telco]}\n"
                "vertical: {label_owner: bank, cut_width: 0}\n",
                "vertical.cut_width: must be an integer"},
        BadCase{"data: {dataset: digits\n", "not valid YAML"},
        BadCase{"- just\n- a list\n", "a job must be a YAML mapping"}));

// Every default of the job file reference (docs/job-reference.md), as a job
// file gets it.
TEST(JobConfigTest, EveryDocumentedDefault) {
  const std::string dir = ::testing::TempDir() + "/job_config_defaults";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/lr-sweep.yaml") << "data: {dataset: digits}\nfederation: {silos: 9}\n";
  StatusOr<JobConfig> c = LoadJobConfig(dir + "/lr-sweep.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "lr-sweep");  // the file name without .yaml
  EXPECT_EQ(c->experiment, "default");
  EXPECT_EQ(c->seed, 0u);
  EXPECT_DOUBLE_EQ(c->data.test_fraction, 0.2);
  EXPECT_DOUBLE_EQ(c->data.silo_test_fraction, 0.1);
  EXPECT_EQ(c->data.partition, PartitionScheme::kIid);
  EXPECT_DOUBLE_EQ(c->data.alpha, 0.5);
  EXPECT_EQ(c->data.shards_per_silo, 2);
  EXPECT_EQ(c->model.kind, ModelKind::kMlp);
  EXPECT_EQ(c->model.hidden, (std::vector<int>{200, 200}));
  EXPECT_EQ(c->preprocess.scale, ScaleKind::kNone);
  EXPECT_EQ(c->training.rounds, 10);
  EXPECT_EQ(c->training.local_epochs, 1);
  EXPECT_EQ(c->training.batch_size, 32);
  EXPECT_EQ(c->training.optimizer, OptimizerKind::kSgd);
  EXPECT_DOUBLE_EQ(c->training.learning_rate, 0.01);
  EXPECT_DOUBLE_EQ(c->training.momentum, 0.0);
  EXPECT_DOUBLE_EQ(c->training.weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(c->training.lr_decay, 1.0);
  EXPECT_DOUBLE_EQ(c->federation.fraction, 1.0);
  EXPECT_EQ(c->federation.min_silos, 1);
  EXPECT_EQ(c->federation.wait_for_silos, 120);
  EXPECT_EQ(c->federation.round_retries, 2);
  EXPECT_EQ(c->federation.round_timeout, 600);
  EXPECT_EQ(c->strategy.name, "fedavg");
  EXPECT_DOUBLE_EQ(c->strategy.server_learning_rate, 1.0);
  EXPECT_DOUBLE_EQ(c->strategy.server_momentum, 0.9);
  EXPECT_DOUBLE_EQ(c->strategy.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c->strategy.beta2, 0.99);
  EXPECT_DOUBLE_EQ(c->strategy.tau, 0.001);
  EXPECT_DOUBLE_EQ(c->strategy.proximal_mu, 0.01);
  EXPECT_DOUBLE_EQ(c->strategy.trim_fraction, 0.1);
  EXPECT_EQ(c->strategy.byzantine, 3);  // the most Krum tolerates: (9 - 3) / 2
  EXPECT_EQ(c->strategy.multi_krum_keep, 0);
  EXPECT_DOUBLE_EQ(c->strategy.max_update_norm, 0.0);
  EXPECT_EQ(c->privacy.dp.mode, DpMode::kNone);
  EXPECT_DOUBLE_EQ(c->privacy.dp.noise_multiplier, 0.0);
  EXPECT_DOUBLE_EQ(c->privacy.dp.target_epsilon, 0.0);
  EXPECT_DOUBLE_EQ(c->privacy.dp.max_grad_norm, 1.0);
  EXPECT_DOUBLE_EQ(c->privacy.dp.delta, 1e-5);
  EXPECT_DOUBLE_EQ(c->privacy.dp.clip_norm, 1.0);
  EXPECT_FALSE(c->privacy.dp.adaptive_clipping);
  EXPECT_DOUBLE_EQ(c->privacy.dp.target_quantile, 0.5);
  EXPECT_DOUBLE_EQ(c->privacy.dp.clip_learning_rate, 0.2);
  EXPECT_FALSE(c->privacy.secure_aggregation.enabled);
  EXPECT_EQ(c->privacy.secure_aggregation.threshold, 0);
  EXPECT_DOUBLE_EQ(c->privacy.secure_aggregation.clip_range, 4.0);
  EXPECT_EQ(c->privacy.secure_aggregation.bits, 24);
  EXPECT_DOUBLE_EQ(c->privacy.secure_aggregation.max_weight, 100000);
  EXPECT_EQ(c->checkpoint.every, 1);
  EXPECT_EQ(c->tracking.mlflow.uri, "");
  EXPECT_TRUE(c->tracking.mlflow.log_model);
  EXPECT_EQ(c->tracking.mlflow.wait, 30);
  // Turned on by a mapping, the secure-aggregation keys keep their defaults.
  std::ofstream(dir + "/secure.yaml") << "data: {dataset: digits}\nfederation: {silos: 9}\n"
                                         "privacy: {secure_aggregation: {bits: 20}}\n";
  StatusOr<JobConfig> secure = LoadJobConfig(dir + "/secure.yaml");
  ASSERT_TRUE(secure.ok()) << secure.status();
  EXPECT_TRUE(secure->privacy.secure_aggregation.enabled);
  EXPECT_DOUBLE_EQ(secure->privacy.secure_aggregation.max_weight, 100000);
  EXPECT_DOUBLE_EQ(secure->privacy.secure_aggregation.clip_range, 4.0);
  // byzantine's automatic value follows the silos a round: never below 0.
  StatusOr<JobConfig> three = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->strategy.byzantine, 0);
}

// A key of the job file reference, a value outside its "allowed" column, and
// the range the error must name.
struct RangeCase {
  const char* key;  // dotted path
  const char* value;
  const char* expected;  // "<key>: must be ... <range>, got <value>"
};

// A minimal job with `key` set to `value`, in the file's own sections.
std::string JobWith(const std::string& key, const std::string& value) {
  const std::vector<std::string> path = absl::StrSplit(key, '.');
  std::string data = "data:\n  dataset: digits\n";
  std::string federation = "federation:\n  silos: 3\n";
  std::string other;
  const std::string leaf =
      std::string(2 * (path.size() - 1), ' ') + path.back() + ": " + value + "\n";
  if (path.size() == 1) {
    other = leaf;
  } else if (path[0] == "data") {
    data += leaf;
  } else if (key == "federation.silos") {
    federation = "federation:\n" + leaf;  // in place of the default, not twice
  } else if (path[0] == "federation") {
    federation += leaf;
  } else {
    other = path[0] + ":\n" + (path.size() == 3 ? "  " + path[1] + ":\n" : "") + leaf;
  }
  return data + federation + other;
}

class JobConfigRangeTest : public ::testing::TestWithParam<RangeCase> {};

TEST_P(JobConfigRangeTest, AValueOutsideTheAllowedRangeNamesTheKeyAndTheRange) {
  const std::string yaml = JobWith(GetParam().key, GetParam().value);
  StatusOr<JobConfig> c = ParseJobConfig(yaml, "job.yaml");
  ASSERT_FALSE(c.ok()) << "accepted:\n" << yaml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(GetParam().expected));
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml:"));
}

INSTANTIATE_TEST_SUITE_P(
    EveryKey, JobConfigRangeTest,
    ::testing::Values(
        RangeCase{"seed", "-1", "seed: must be an integer >= 0, got -1"},
        RangeCase{"data.test_fraction", "1",
                  "data.test_fraction: must be a number in (0, 1), got 1"},
        RangeCase{"data.test_fraction", "0",
                  "data.test_fraction: must be a number in (0, 1), got 0"},
        RangeCase{"data.silo_test_fraction", "1",
                  "data.silo_test_fraction: must be a number in [0, 1), got 1"},
        RangeCase{"data.shards_per_silo", "1001",
                  "data.shards_per_silo: must be an integer in [1, 1000], got 1001"},
        RangeCase{"training.local_epochs", "0",
                  "training.local_epochs: must be an integer in [1, 10000], got 0"},
        RangeCase{"training.weight_decay", "1.5",
                  "training.weight_decay: must be a number in [0, 1], got 1.5"},
        RangeCase{"federation.silos", "10001",
                  "federation.silos: must be an integer in [1, 10000], got 10001"},
        RangeCase{"federation.silos", "0",
                  "federation.silos: must be an integer in [1, 10000], got 0"},
        RangeCase{"federation.fraction", "0",
                  "federation.fraction: must be a number in (0, 1], got 0"},
        RangeCase{"federation.round_timeout", "0",
                  "federation.round_timeout: must be an integer in [1, 604800], got 0"},
        RangeCase{"federation.wait_for_silos", "604801",
                  "federation.wait_for_silos: must be an integer in [1, 604800], got 604801"},
        RangeCase{"federation.round_retries", "101",
                  "federation.round_retries: must be an integer in [0, 100], got 101"},
        RangeCase{"strategy.server_learning_rate", "0",
                  "strategy.server_learning_rate: must be a number in (0, 100], got 0"},
        RangeCase{"strategy.server_momentum", "1",
                  "strategy.server_momentum: must be a number in [0, 1), got 1"},
        RangeCase{"strategy.beta1", "1", "strategy.beta1: must be a number in [0, 1), got 1"},
        RangeCase{"strategy.tau", "0", "strategy.tau: must be a number in (0, 10], got 0"},
        RangeCase{"strategy.proximal_mu", "1001",
                  "strategy.proximal_mu: must be a number in [0, 1000], got 1001"},
        RangeCase{"strategy.byzantine", "-2",
                  "strategy.byzantine: must be an integer in [-1, 1000], got -2"},
        RangeCase{"strategy.multi_krum_keep", "10001",
                  "strategy.multi_krum_keep: must be an integer in [0, 10000], got 10001"},
        RangeCase{"strategy.max_update_norm", "-1",
                  "strategy.max_update_norm: must be a number in [0, 1e+09], got -1"},
        RangeCase{"privacy.dp.noise_multiplier", "-1",
                  "privacy.dp.noise_multiplier: must be a number in [0, 1e+06], got -1"},
        RangeCase{"privacy.dp.target_epsilon", "-1",
                  "privacy.dp.target_epsilon: must be a number in [0, 1e+06], got -1"},
        RangeCase{"privacy.dp.max_grad_norm", "0",
                  "privacy.dp.max_grad_norm: must be a number in (0, 1e+06], got 0"},
        RangeCase{"privacy.dp.clip_norm", "0",
                  "privacy.dp.clip_norm: must be a number in (0, 1e+09], got 0"},
        RangeCase{"privacy.dp.target_quantile", "1.5",
                  "privacy.dp.target_quantile: must be a number in [0, 1], got 1.5"},
        RangeCase{"privacy.dp.clip_learning_rate", "0",
                  "privacy.dp.clip_learning_rate: must be a number in (0, 10], got 0"},
        RangeCase{"privacy.secure_aggregation.clip_range", "0",
                  "privacy.secure_aggregation.clip_range: must be a number in (0, 1e+06], got 0"},
        RangeCase{"privacy.secure_aggregation.max_weight", "0.5",
                  "privacy.secure_aggregation.max_weight: must be a number in [1, 1e+07], got 0.5"},
        RangeCase{
            "privacy.secure_aggregation.max_weight", "1e8",
            "privacy.secure_aggregation.max_weight: must be a number in [1, 1e+07], got 1e+08"},
        RangeCase{"checkpoint.every", "-1",
                  "checkpoint.every: must be an integer in [0, 100000], got -1"}),
    [](const ::testing::TestParamInfo<RangeCase>& info) {
      return absl::StrCat(absl::StrReplaceAll(info.param.key, {{".", "_"}}), "_", info.index);
    });

TEST(JobConfigTest, OverridesApplyByDottedPath) {
  StatusOr<JobConfig> c = ParseJobConfig(
      kMinimal, "job.yaml",
      {{"training.rounds", "3"}, {"federation.silos", "[x, y]"}, {"data.partition", "shards"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->training.rounds, 3);
  EXPECT_EQ(c->federation.silos, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(c->data.partition, PartitionScheme::kShards);
}

TEST(JobConfigTest, BadOverridesNameTheFlag) {
  StatusOr<JobConfig> bad = ParseJobConfig(kMinimal, "job.yaml", {{"training.rounds", "-2"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--set training.rounds: must be an integer"));

  StatusOr<JobConfig> typo = ParseJobConfig(kMinimal, "job.yaml", {{"training.rouns", "2"}});
  ASSERT_FALSE(typo.ok());
  EXPECT_THAT(typo.status().message(), HasSubstr("unknown key 'training.rouns'"));
  EXPECT_THAT(typo.status().message(), HasSubstr("did you mean 'training.rounds'"));

  StatusOr<JobConfig> into_value = ParseJobConfig(kMinimal, "job.yaml", {{"seed.x", "2"}});
  EXPECT_FALSE(into_value.ok());

  EXPECT_FALSE(ParseOverride("training.rounds").ok());
  EXPECT_FALSE(ParseOverride("=3").ok());
  StatusOr<ConfigOverride> o = ParseOverride("a.b=c=d");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->key, "a.b");
  EXPECT_EQ(o->value, "c=d");
}

TEST(JobConfigTest, TorchScriptPathIsTheJobFilesOrTheCommandsAndMustExist) {
  const std::string dir = ::testing::TempDir() + "/job_config_torchscript";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/models");
  std::ofstream(dir + "/models/net.pt") << "x";
  std::ofstream(dir + "/job.yaml")
      << "data: {dataset: digits}\nfederation: {silos: 2}\nmodel: {torchscript: models/net.pt}\n";
  StatusOr<JobConfig> c = LoadJobConfig(dir + "/job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.kind, ModelKind::kTorchScript);
  EXPECT_EQ(c->model.torchscript, std::filesystem::path(dir + "/models/net.pt").lexically_normal());
  StatusOr<JobConfig> back = ParseJobConfig(JobConfigToYaml(*c), "resolved.yaml");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model.torchscript, c->model.torchscript);

  std::ofstream(dir + "/missing.yaml")
      << "data: {dataset: digits}\nfederation: {silos: 2}\nmodel: {torchscript: nothere.pt}\n";
  StatusOr<JobConfig> missing = LoadJobConfig(dir + "/missing.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("missing.yaml: model.torchscript"));
  EXPECT_THAT(missing.status().message(),
              HasSubstr(std::filesystem::path(dir + "/nothere.pt").lexically_normal().string() +
                        ": no such file"));
  // From --set, relative to where the command runs.
  StatusOr<JobConfig> flag =
      LoadJobConfig(dir + "/job.yaml", {{"model.torchscript", "elsewhere.pt"}});
  ASSERT_FALSE(flag.ok());
  EXPECT_THAT(flag.status().message(), HasSubstr("--set model.torchscript"));
  EXPECT_THAT(flag.status().message(),
              HasSubstr((std::filesystem::current_path() / "elsewhere.pt").string()));
}

TEST(JobConfigTest, MlflowExportIsOffUntilAUriIsGivenAndRoundTrips) {
  StatusOr<JobConfig> off = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(off->tracking.mlflow.uri.empty());
  EXPECT_EQ(JobConfigToYaml(*off).find("tracking"), std::string::npos);
  StatusOr<JobConfig> on =
      ParseJobConfig(kMinimal, "job.yaml",
                     {{"tracking.mlflow.uri", "https://mlflow.example.org/team"},
                      {"tracking.mlflow.log_model", "false"},
                      {"tracking.mlflow.wait", "5"}});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->tracking.mlflow.uri, "https://mlflow.example.org/team");
  EXPECT_FALSE(on->tracking.mlflow.log_model);
  EXPECT_EQ(on->tracking.mlflow.wait, 5);
  EXPECT_TRUE(on->tracking.mlflow.experiment.empty());  // the job's experiment
  StatusOr<JobConfig> back = ParseJobConfig(JobConfigToYaml(*on), "resolved.yaml");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(JobConfigToYaml(*back), JobConfigToYaml(*on));
  EXPECT_FALSE(back->tracking.mlflow.log_model);
}

TEST(JobConfigTest, ResolvedYamlParsesBackToTheSameJob) {
  StatusOr<JobConfig> c = ParseJobConfig(kMinimal, "job.yaml",
                                         {{"training.learning_rate", "0.123456789"},
                                          {"data.alpha", "0.3"},
                                          {"name", "x"},
                                          {"privacy.dp.mode", "local"},
                                          {"privacy.dp.target_epsilon", "3.5"},
                                          {"privacy.dp.max_grad_norm", "0.7"}});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string yaml = JobConfigToYaml(*c);
  StatusOr<JobConfig> back = ParseJobConfig(yaml, "resolved.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(JobConfigToYaml(*back), yaml);
  EXPECT_DOUBLE_EQ(back->training.learning_rate, 0.123456789);
  EXPECT_EQ(back->privacy.dp.mode, DpMode::kLocal);
  EXPECT_DOUBLE_EQ(back->privacy.dp.target_epsilon, 3.5);
  EXPECT_DOUBLE_EQ(back->privacy.dp.max_grad_norm, 0.7);
  EXPECT_DOUBLE_EQ(back->privacy.dp.delta, 1e-5);
  EXPECT_EQ(back->federation.silos, c->federation.silos);
}

TEST(JobConfigTest, SecureAggregationIsOneSwitchWithDefaultsOrAMapping) {
  StatusOr<JobConfig> on =
      ParseJobConfig(kMinimal, "job.yaml", {{"privacy.secure_aggregation", "true"}});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->privacy.secure_aggregation.enabled);
  EXPECT_EQ(on->privacy.secure_aggregation.threshold, 0);
  EXPECT_EQ(on->privacy.secure_aggregation.bits, 24);
  EXPECT_DOUBLE_EQ(on->privacy.secure_aggregation.clip_range, 4.0);
  StatusOr<JobConfig> mapped = ParseJobConfig(
      std::string(kMinimal) + "privacy:\n  secure_aggregation: {threshold: 3, bits: 20}\n",
      "job.yaml");
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_TRUE(mapped->privacy.secure_aggregation.enabled);
  EXPECT_EQ(mapped->privacy.secure_aggregation.threshold, 3);
  EXPECT_EQ(mapped->privacy.secure_aggregation.bits, 20);
  StatusOr<JobConfig> back = ParseJobConfig(JobConfigToYaml(*mapped), "resolved.yaml");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(JobConfigToYaml(*back), JobConfigToYaml(*mapped));
  StatusOr<JobConfig> off = ParseJobConfig(kMinimal, "job.yaml");
  EXPECT_FALSE(off->privacy.secure_aggregation.enabled);
}

TEST(JobConfigTest, StrategiesGetTheirOwnDefaultStep) {
  auto lr = [](const std::string& name, const std::string& extra = "") {
    StatusOr<JobConfig> c = ParseJobConfig(
        std::string(kMinimal) + "strategy: {name: " + name + extra + "}\n", "job.yaml");
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? c->strategy.server_learning_rate : -1;
  };
  EXPECT_DOUBLE_EQ(lr("fedavg"), 1.0);
  EXPECT_DOUBLE_EQ(lr("fedadam"), 0.03);
  EXPECT_DOUBLE_EQ(lr("fedyogi"), 0.03);
  EXPECT_DOUBLE_EQ(lr("fedadagrad"), 0.1);
  EXPECT_DOUBLE_EQ(lr("fedavgm"), 0.1);  // 1 - momentum 0.9
  EXPECT_DOUBLE_EQ(lr("fedavgm", ", server_momentum: 0.5"), 0.5);
  EXPECT_DOUBLE_EQ(lr("fedadam", ", server_learning_rate: 0.2"), 0.2);
}

// The control for the refusals above: central DP with the strategies whose
// server step is the plain mean.
TEST(JobConfigTest, CentralDpGoesWithFedAvgAndFedProx) {
  for (const char* strategy : {"fedavg", "fedprox"}) {
    StatusOr<JobConfig> c = ParseJobConfig(
        absl::StrCat("data: {dataset: digits}\nfederation: {silos: 3}\nstrategy: {name: ", strategy,
                     "}\nprivacy: {dp: {mode: central, noise_multiplier: 1}}\n"),
        "job.yaml");
    EXPECT_TRUE(c.ok()) << strategy << ": " << c.status();
  }
}

TEST(JobConfigTest, EditDistance) {
  EXPECT_EQ(EditDistance("rounds", "rounds"), 0);
  EXPECT_EQ(EditDistance("round", "rounds"), 1);
  EXPECT_EQ(EditDistance("trainig", "training"), 1);
  EXPECT_EQ(EditDistance("", "abc"), 3);
}

}  // namespace
}  // namespace fedsilo
