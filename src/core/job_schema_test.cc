#include "core/job_schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/file_util.h"

namespace fedsilo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kMinimal[] = "data: {dataset: digits}\nfederation: {silos: 3}\n";

// docs/job-reference.md is generated from the table: regenerate it with
//   build/fedsilo validate --reference > docs/job-reference.md
TEST(JobSchemaTest, TheCommittedReferenceIsTheTables) {
  StatusOr<std::string> committed =
      ReadFile(std::string(FEDSILO_TEST_SOURCE_DIR) + "/docs/job-reference.md");
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(*committed, JobReferenceMarkdown())
      << "docs/job-reference.md is stale: build/fedsilo validate --reference > "
         "docs/job-reference.md";
}

// Every key of the table is a key of the resolved job, and a job that sets
// each to something other than its default reads back as written.
TEST(JobSchemaTest, EveryKeyOfTheTableIsReadAndWritten) {
  StatusOr<JobConfig> defaults = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  const std::string resolved = JobConfigToYaml(*defaults);
  std::set<std::string> paths;
  for (const JobKeyInfo& key : JobKeys()) {
    EXPECT_TRUE(paths.insert(key.path).second) << key.path << " is in the table twice";
    EXPECT_FALSE(key.type.empty()) << key.path;
    EXPECT_FALSE(key.help.empty()) << key.path;
    EXPECT_FALSE(key.fallback.empty()) << key.path;
    EXPECT_GE(key.since, 1) << key.path;
    EXPECT_LE(key.since, kJobSchemaVersion) << key.path;
  }
  StatusOr<JobConfig> changed = ParseJobConfig(R"(
name: every-key
experiment: sweep
seed: 3
data: {dataset: breast_cancer, catalog: cat.yaml, test_fraction: 0.25, silo_test_fraction: 0.2, partition: dirichlet,
       alpha: 0.3, shards_per_silo: 4}
model: {name: logistic, hidden: [7]}
preprocess: {scale: minmax, categories: {kind: [a, b]}}
training: {rounds: 3, local_epochs: 2, batch_size: 9, optimizer: sgd, learning_rate: 0.2,
           momentum: 0.4, weight_decay: 0.001, lr_decay: 0.8}
federation: {silos: [a, b, c, d], fraction: 0.75, min_silos: 3, round_timeout: 60,
             wait_for_silos: 30, round_retries: 1}
strategy: {name: fedprox, server_learning_rate: 0.05, server_momentum: 0.5, beta1: 0.8,
           beta2: 0.95, tau: 0.01, proximal_mu: 0.1, trim_fraction: 0.2, byzantine: 0,
           multi_krum_keep: 2, max_update_norm: 5}
privacy:
  dp: {mode: central, noise_multiplier: 0.7, max_grad_norm: 2, delta: 1e-6, clip_norm: 3,
       adaptive_clipping: true, target_quantile: 0.6, clip_learning_rate: 0.3}
  secure_aggregation: {enabled: false, threshold: 3, clip_range: 2, bits: 20, max_weight: 500}
checkpoint: {every: 2}
tracking: {mlflow: {uri: "http://127.0.0.1:5000", experiment: x, log_model: false, wait: 5}}
)",
                                               "job.yaml");
  ASSERT_TRUE(changed.ok()) << changed.status();
  const std::string written = JobConfigToYaml(*changed);
  for (const JobKeyInfo& key : JobKeys()) {
    // Each key's leaf appears in the written job ("every-key" sets them all).
    const std::string leaf = key.path.substr(key.path.rfind('.') + 1);
    // Computed by a run; and a model is built in or TorchScript, not both.
    if (key.path == "preprocess.statistics" || key.path == "model.torchscript") continue;
    // A vertical job's (the next test).
    if (key.path == "kind" || key.path.rfind("vertical.", 0) == 0) continue;
    EXPECT_THAT(written, HasSubstr(leaf + ":")) << key.path;
  }
  StatusOr<JobConfig> again = ParseJobConfig(written, "written");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << written;
  EXPECT_EQ(JobConfigToYaml(*again), written);
  EXPECT_NE(written, resolved);
  EXPECT_DOUBLE_EQ(again->training.lr_decay, 0.8);
  EXPECT_EQ(again->privacy.secure_aggregation.threshold, 3);
  EXPECT_FALSE(again->tracking.mlflow.log_model);
}

// A vertical job writes its kind and every vertical key, and reads back as
// written; a horizontal job writes none of them.
TEST(JobSchemaTest, AVerticalJobsKeysAreReadAndWritten) {
  StatusOr<JobConfig> vertical = ParseJobConfig(R"(
kind: vertical
data: {dataset: customers, test_fraction: 0.3}
model: {name: mlp, hidden: [4]}
federation: {silos: [bank, telecom]}
vertical: {label_owner: telecom, cut_width: 3, top_hidden: [5, 2], gradient_noise: 0.5,
           predict_with: fraud-20261206-015242-7f68}
)",
                                                "job.yaml");
  ASSERT_TRUE(vertical.ok()) << vertical.status();
  const std::string written = JobConfigToYaml(*vertical);
  for (const JobKeyInfo& key : JobKeys()) {
    if (key.path != "kind" && key.path.rfind("vertical.", 0) != 0) continue;
    EXPECT_THAT(written, HasSubstr(key.path.substr(key.path.rfind('.') + 1) + ":")) << key.path;
  }
  EXPECT_THAT(written, HasSubstr("kind: vertical"));
  EXPECT_THAT(written, HasSubstr("top_hidden: [5, 2]"));
  StatusOr<JobConfig> again = ParseJobConfig(written, "written");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << written;
  EXPECT_EQ(JobConfigToYaml(*again), written);
  EXPECT_EQ(again->vertical.label_owner, "telecom");
  EXPECT_EQ(OldestSchemaFor(*again).first, 3);
  // A job that predicts scores its rows in one round.
  EXPECT_EQ(again->vertical.predict_with, "fraud-20261206-015242-7f68");
  EXPECT_EQ(again->training.rounds, 1);
  for (const char* bad : {"../../etc", "..", "a/b", "run id"}) {
    StatusOr<JobConfig> job = ParseJobConfig(written, "job.yaml", {{"vertical.predict_with", bad}});
    ASSERT_FALSE(job.ok()) << bad;
    EXPECT_THAT(std::string(job.status().message()), HasSubstr("is not a run id")) << bad;
  }

  StatusOr<JobConfig> horizontal = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(horizontal.ok());
  const std::string plain = JobConfigToYaml(*horizontal);
  EXPECT_THAT(plain, Not(HasSubstr("kind:")));
  EXPECT_THAT(plain, Not(HasSubstr("vertical")));
  EXPECT_EQ(OldestSchemaFor(*horizontal).first, 1);
}

TEST(JobSchemaTest, LrDecayIsCheckedAndScalesEachRoundsRate) {
  for (const char* bad : {"0", "1.5", "-0.1", "fast"}) {
    StatusOr<JobConfig> job = ParseJobConfig(kMinimal, "job.yaml", {{"training.lr_decay", bad}});
    ASSERT_FALSE(job.ok()) << bad;
    EXPECT_THAT(std::string(job.status().message()),
                HasSubstr("--set training.lr_decay: must be a number in (0, 1]"));
  }
  // A rate that decays to nothing trains nothing (and SCAFFOLD divides by it).
  StatusOr<JobConfig> vanishing = ParseJobConfig(
      kMinimal, "job.yaml", {{"training.lr_decay", "0.5"}, {"training.rounds", "200"}});
  ASSERT_FALSE(vanishing.ok());
  EXPECT_THAT(std::string(vanishing.status().message()),
              HasSubstr("--set training.lr_decay: is 0.5: over 200 rounds it takes the learning "
                        "rate below a millionth of learning_rate; use at least 0.933"));
  EXPECT_TRUE(ParseJobConfig(kMinimal, "job.yaml",
                             {{"training.lr_decay", "0.933"}, {"training.rounds", "200"}})
                  .ok());
  TrainingConfig training;
  training.learning_rate = 0.2;
  training.lr_decay = 0.5;
  EXPECT_DOUBLE_EQ(RoundLearningRate(training, 1), 0.2);
  EXPECT_DOUBLE_EQ(RoundLearningRate(training, 3), 0.05);
  training.lr_decay = 1;
  EXPECT_DOUBLE_EQ(RoundLearningRate(training, 50), 0.2);
}

// A silo of the release before reads job schema 1. A job that keeps the
// newer keys at their defaults is written without them, and such a reader
// takes it; a job that needs one is refused, naming the key and the schema.
TEST(JobSchemaTest, AnOlderReaderGetsTheJobWithoutNewerKeysOrARefusal) {
  StatusOr<JobConfig> plain = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(OldestSchemaFor(*plain).first, 1);
  StatusOr<std::string> v1 = JobConfigToYamlForSchema(*plain, 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_THAT(*v1, Not(HasSubstr("lr_decay")));
  EXPECT_THAT(JobConfigToYaml(*plain), HasSubstr("lr_decay: 1"));
  StatusOr<JobConfig> read_by_v1 = ParseJobConfigOfSchema(*v1, "task", 1);
  ASSERT_TRUE(read_by_v1.ok()) << read_by_v1.status();
  EXPECT_EQ(JobConfigToYaml(*read_by_v1), JobConfigToYaml(*plain));

  // A schema-1 reader does not know the newer key at all.
  StatusOr<JobConfig> strict = ParseJobConfigOfSchema(JobConfigToYaml(*plain), "task", 1);
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(std::string(strict.status().message()), HasSubstr("unknown key 'training.lr_decay'"));

  StatusOr<JobConfig> decaying =
      ParseJobConfig(kMinimal, "job.yaml", {{"training.lr_decay", "0.9"}});
  ASSERT_TRUE(decaying.ok()) << decaying.status();
  EXPECT_EQ(OldestSchemaFor(*decaying), std::make_pair(2, std::string("training.lr_decay")));
  StatusOr<std::string> refused = JobConfigToYamlForSchema(*decaying, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("sets training.lr_decay, which needs job schema 2"));
  StatusOr<std::string> v2 = JobConfigToYamlForSchema(*decaying, 2);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(*v2, JobConfigToYaml(*decaying));

  for (int schema : {0, kJobSchemaVersion + 1}) {
    StatusOr<std::string> unknown = JobConfigToYamlForSchema(*plain, schema);
    ASSERT_FALSE(unknown.ok()) << schema;
    EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// A silo's ledger pins a run's job by the digest of its resolved YAML. The
// stable text of a job that sets no newer key is, byte for byte, what
// fedsilo 0.1.0 wrote for it (tests/fixtures/release-0.1.0): a silo upgraded
// during a run still knows the run's job.
TEST(JobSchemaTest, TheStableTextOfAnOldJobIsTheOldReleasesText) {
  for (const char* name : {"digits-job.yaml", "fraud-job.yaml"}) {
    StatusOr<std::string> old =
        ReadFile(std::string(FEDSILO_TEST_SOURCE_DIR) + "/tests/fixtures/release-0.1.0/" + name);
    ASSERT_TRUE(old.ok()) << old.status();
    StatusOr<JobConfig> job = ParseJobConfig(*old, name);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(JobConfigToStableYaml(*job), *old) << name;
    EXPECT_NE(JobConfigToYaml(*job), *old) << name;  // this release's text has lr_decay
    // A newer key that is set makes the newer schema's text.
    job->training.lr_decay = 0.9;
    EXPECT_THAT(JobConfigToStableYaml(*job), HasSubstr("lr_decay: 0.9")) << name;
  }
}

// `secure_aggregation: true` is its section's shorthand; any other section
// given as a value is an error.
TEST(JobSchemaTest, OnlyASectionWithAShorthandMayBeAValue) {
  StatusOr<JobConfig> on =
      ParseJobConfig(kMinimal, "job.yaml", {{"privacy.secure_aggregation", "true"}});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->privacy.secure_aggregation.enabled);
  StatusOr<JobConfig> mapping =
      ParseJobConfig(kMinimal, "job.yaml", {{"privacy.secure_aggregation", "{bits: 20}"}});
  ASSERT_TRUE(mapping.ok()) << mapping.status();
  EXPECT_TRUE(mapping->privacy.secure_aggregation.enabled);
  StatusOr<JobConfig> training = ParseJobConfig(kMinimal, "job.yaml", {{"training", "5"}});
  ASSERT_FALSE(training.ok());
  EXPECT_THAT(std::string(training.status().message()), HasSubstr("training: must be a mapping"));
}

}  // namespace
}  // namespace fedsilo
