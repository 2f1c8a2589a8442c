// End to end: the fraud example, silos training on their own CSV files, as a
// user runs it. One run of the job (SetUpTestSuite) serves the suite's
// tests, so this binary is one CTest test (CsvJobTest.All): the run costs a
// few seconds, each check beside it none.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/job_config.h"
#include "example_job.h"
#include "ml/dataset_catalog.h"
#include "test_util.h"

namespace fedsilo {
namespace {

using ::testing::HasSubstr;
using testing_util::Example;
using testing_util::Fedsilo;
using testing_util::LastJson;
using testing_util::Output;
using testing_util::ReadAll;
using testing_util::ReadCsv;
namespace fs = std::filesystem;

// The share of the test rows (the job's seeded split of the file's rows,
// silo_test_fraction 0.3) that `predictions`, written by `fedsilo predict`
// on one region's file, gets right; with the split's indices.
struct TestRowScore {
  std::vector<int64_t> test_rows;
  std::vector<std::vector<std::string>> rows;  // the predictions, header first
  double accuracy = 0;
};
TestRowScore ScoreTestRows(const std::string& predictions) {
  TestRowScore score;
  score.rows = ReadCsv(predictions);
  std::vector<int64_t> labels;
  for (size_t i = 1; i < score.rows.size(); ++i) labels.push_back(std::stoi(score.rows[i][4]));
  score.test_rows = ml::StratifiedIndices(labels, 2, 0.3, /*seed=*/1).second;
  int correct = 0;
  for (int64_t i : score.test_rows) {
    const std::vector<std::string>& row = score.rows[static_cast<size_t>(i) + 1];
    correct += row[1] == row[4];
  }
  score.accuracy = correct / static_cast<double>(score.test_rows.size());
  return score;
}

// examples/fraud/fraud.yaml for 4 rounds, in simulation, once for the suite.
class CsvJobTest : public testing_util::SharedRunTest<CsvJobTest> {
 public:
  static constexpr char kFolder[] = "csv-job";
  static std::string RunArguments() {
    return Example("fraud/fraud.yaml") + " --set training.rounds=4";
  }

 protected:
  static void SetUpTestSuite() {
    SharedRunTest::SetUpTestSuite();
    if (summary().is_null()) return;  // SetUp() says why
    std::ifstream metrics(run_dir() + "/metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
      const nlohmann::json m = nlohmann::json::parse(line);
      rounds_[m["round"].get<int>()][m["name"]] = m["value"];
    }
  }

  // The metric `name` of `round` (0: the statistics).
  static double Metric(int round, const std::string& name) {
    EXPECT_TRUE(rounds_[round].count(name)) << "round " << round << " has no " << name;
    return rounds_[round][name];
  }
  static JobConfig ResolvedJob(const std::string& run_dir) {
    StatusOr<JobConfig> job = LoadJobConfig(run_dir + "/job.yaml");
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : JobConfig{};
  }
  // `fedsilo predict` of the run on `data`, into dir()/`out`.
  static Output Predict(const std::string& data, const std::string& out,
                        const std::string& extra = "") {
    return Fedsilo("predict " + run_id() + extra + " --data " + data + " --out " + dir() + "/" +
                   out + Workdir());
  }

 private:
  static inline std::map<int, std::map<std::string, double>> rounds_;
};

// The generator is seeded: the example's committed files are its output.
TEST_F(CsvJobTest, TheGeneratorWritesTheExamplesFiles) {
  Output gen = Fedsilo("generate fraud --json --out " + dir() + "/data");
  ASSERT_EQ(gen.status, 0) << gen.err;
  for (const char* region : {"east", "west", "south"}) {
    EXPECT_EQ(ReadAll(dir() + "/data/" + region + ".csv"),
              ReadAll(Example(std::string("fraud/data/") + region + ".csv")))
        << region;
  }
  EXPECT_EQ(LastJson(gen.out)["files"][2]["frauds"], 75);
}

TEST_F(CsvJobTest, TheModelLearnsToFindFraud) {
  const nlohmann::json& final = summary()["final"];
  EXPECT_GT(final["auc"].get<double>(), 0.8);
  EXPECT_GT(final["accuracy"].get<double>(), 0.95);
  EXPECT_TRUE(final.contains("precision") && final.contains("recall")) << final;
  EXPECT_GT(Metric(4, "south/global_test_accuracy"), 0.9);
}

// Every round, each silo reports its training and local-test metrics, with
// precision, recall and AUC as there are two classes; so does the federation.
TEST_F(CsvJobTest, EachRoundEverySiloReportsItsTwoClassMetrics) {
  for (int round = 1; round <= 4; ++round) {
    for (const std::string source : {"east", "west", "south"}) {
      for (const char* name : {"train_loss", "test_loss"}) {
        EXPECT_GE(Metric(round, source + "/" + name), 0) << source << " round " << round;
      }
      for (const char* name : {"train_accuracy", "test_accuracy", "test_precision", "test_recall",
                               "test_auc"}) {
        const double value = Metric(round, source + "/" + name);
        EXPECT_TRUE(value >= 0 && value <= 1) << source << "/" << name << " round " << round;
      }
    }
    for (const std::string source : {"east", "west", "south"}) {
      EXPECT_EQ(Metric(round, source + "/num_examples"), Metric(0, source + "/rows")) << source;
    }
    for (const char* name : {"test_accuracy", "test_precision", "test_recall", "test_auc"}) {
      const double value = Metric(round, std::string("global/") + name);
      EXPECT_TRUE(value >= 0 && value <= 1) << name << " round " << round;
    }
    EXPECT_GE(Metric(round, "global/test_loss"), 0);
    EXPECT_EQ(Metric(round, "global/silos_succeeded"), 3);
  }
}

// The federation's test loss and accuracy are the silos' scores of the
// global model, weighted by their test rows (a file's rows less those it
// trained on), round by round.
TEST_F(CsvJobTest, TheGlobalScoresAreTheSilosWeightedByTheirTestRows) {
  const std::map<std::string, double> file_rows = {{"east", 3000}, {"west", 2000}, {"south", 1500}};
  for (int round = 1; round <= 4; ++round) {
    double rows = 0, accuracy = 0, loss = 0;
    for (const auto& [region, in_file] : file_rows) {
      const double test_rows = in_file - Metric(0, region + "/rows");
      rows += test_rows;
      accuracy += test_rows * Metric(round, region + "/global_test_accuracy");
      loss += test_rows * Metric(round, region + "/global_test_loss");
    }
    EXPECT_NEAR(accuracy / rows, Metric(round, "global/test_accuracy"), 1e-12) << round;
    EXPECT_NEAR(loss / rows, Metric(round, "global/test_loss"), 1e-9) << round;
  }
}

// The federated statistics are round 0 of the run, and complete its job.
TEST_F(CsvJobTest, TheStatisticsAreRoundZeroAndCompleteTheJob) {
  EXPECT_EQ(Metric(0, "global/rows"),
            Metric(0, "east/rows") + Metric(0, "west/rows") + Metric(0, "south/rows"));
  EXPECT_EQ(Metric(0, "east/rows"), 2100);  // 70 % of 3000 rows train
  const JobConfig resolved = ResolvedJob(run_dir());
  const FeatureStatistics& st = resolved.preprocess.statistics;
  EXPECT_EQ(st.rows, Metric(0, "global/rows"));
  ASSERT_EQ(st.features.size(), 12u);
  EXPECT_EQ(st.features[2], "merchant=grocery");
  ASSERT_EQ(st.class_counts.size(), 2u);
  EXPECT_EQ(st.class_counts[1], Metric(0, "global/class_1_rows"));
}

// The same job with silo processes over gRPC: the same model.
TEST_F(CsvJobTest, SiloProcessesReachTheSameModel) {
  Output processes = Fedsilo("run " + Example("fraud/fraud.yaml") +
                             " --set training.rounds=4 --processes --quiet --json --workdir " +
                             dir() + "/processes");
  ASSERT_EQ(processes.status, 0) << processes.err;
  EXPECT_EQ(LastJson(processes.out)["final"]["accuracy"], summary()["final"]["accuracy"]);
  EXPECT_EQ(LastJson(processes.out)["final"]["auc"], summary()["final"]["auc"]);
}

// A hostile silo corrupts its updates only: the statistics and evaluation
// tasks go on (the same statistics), and a robust strategy outvotes it.
TEST_F(CsvJobTest, AHostileSiloCorruptsOnlyItsUpdatesAndTheMedianOutvotesIt) {
  Output hostile = Fedsilo("run " + Example("fraud/fraud.yaml") +
                           " --set training.rounds=4 --set strategy.name=median --attack "
                           "sign_flip --attackers 1 --quiet --json --workdir " +
                           dir() + "/hostile");
  ASSERT_EQ(hostile.status, 0) << hostile.err;
  const nlohmann::json attacked = LastJson(hostile.out);
  EXPECT_GT(attacked["final"]["accuracy"].get<double>(), 0.95);
  const JobConfig attacked_job = ResolvedJob(attacked["run_dir"]);
  const JobConfig clean_job = ResolvedJob(run_dir());
  EXPECT_EQ(attacked_job.preprocess.statistics.mean, clean_job.preprocess.statistics.mean);
  EXPECT_EQ(attacked_job.preprocess.statistics.rows, clean_job.preprocess.statistics.rows);
}

// predict: every row of a region's file, with the run's preprocessing; the
// probabilities add up and the prediction is the likelier class.
TEST_F(CsvJobTest, PredictScoresEveryRowOfAFile) {
  Output p = Predict(Example("fraud/data/south.csv"), "south.csv", " --json");
  ASSERT_EQ(p.status, 0) << p.err;
  const nlohmann::json ps = LastJson(p.out);
  EXPECT_EQ(ps["rows"], 1500);
  const auto rows = ReadCsv(dir() + "/south.csv");
  ASSERT_EQ(rows.size(), 1501u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"row", "predicted", "p_0", "p_1", "is_fraud"}));
  int correct = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    const double p0 = std::stod(rows[i][2]), p1 = std::stod(rows[i][3]);
    EXPECT_NEAR(p0 + p1, 1.0, 1e-5);
    EXPECT_EQ(rows[i][1], p1 > p0 ? "1" : "0");
    correct += rows[i][1] == rows[i][4];
  }
  EXPECT_NEAR(ps["accuracy"].get<double>(), correct / 1500.0, 1e-12);
}

// On each region's test rows (the job's seeded split of its file), predict's
// output is what the federation measured of the final model there; pooled
// over the regions, it is the global evaluation.
TEST_F(CsvJobTest, PredictOnTheTestRowsIsWhatTheFederationMeasured) {
  int all_tp = 0, all_fp = 0, all_fn = 0;
  std::vector<std::pair<double, int>> pooled;  // (p_1, label) of every test row
  for (const std::string region : {"east", "west", "south"}) {
    const std::string out = region + "-predictions.csv";
    ASSERT_EQ(Predict(Example("fraud/data/" + region + ".csv"), out).status, 0) << region;
    const TestRowScore score = ScoreTestRows(dir() + "/" + out);
    int tp = 0, fp = 0, fn = 0;
    for (int64_t i : score.test_rows) {
      const std::vector<std::string>& row = score.rows[static_cast<size_t>(i) + 1];
      tp += row[1] == "1" && row[4] == "1";
      fp += row[1] == "1" && row[4] == "0";
      fn += row[1] == "0" && row[4] == "1";
      pooled.emplace_back(std::stod(row[3]), std::stoi(row[4]));
    }
    EXPECT_EQ(score.test_rows.size() + Metric(0, region + "/rows"), score.rows.size() - 1)
        << region;
    EXPECT_DOUBLE_EQ(score.accuracy, Metric(4, region + "/global_test_accuracy")) << region;
    EXPECT_DOUBLE_EQ(tp / static_cast<double>(tp + fn), Metric(4, region + "/global_test_recall"))
        << region;
    all_tp += tp;
    all_fp += fp;
    all_fn += fn;
  }
  EXPECT_DOUBLE_EQ(all_tp / static_cast<double>(all_tp + all_fn), Metric(4, "global/test_recall"));
  EXPECT_DOUBLE_EQ(all_tp / static_cast<double>(all_tp + all_fp),
                   Metric(4, "global/test_precision"));
  double pairs = 0, positives = 0;
  for (const auto& [p, label] : pooled) {
    if (label != 1) continue;
    ++positives;
    for (const auto& [q, other] : pooled) {
      if (other == 0) pairs += p > q ? 1.0 : p == q ? 0.5 : 0.0;
    }
  }
  const double pooled_auc = pairs / (positives * (pooled.size() - positives));
  EXPECT_NEAR(Metric(4, "global/test_auc"), pooled_auc, 2e-3);
}

// predict --round N scores with round N's checkpoint: on south's test rows,
// what the federation measured of round 2's model there, not the final one.
TEST_F(CsvJobTest, PredictAtARoundUsesThatRoundsModel) {
  const std::string south = Example("fraud/data/south.csv");
  ASSERT_EQ(Predict(south, "south-final.csv").status, 0);
  Output at_round2 = Predict(south, "south-round2.csv", " --round 2");
  ASSERT_EQ(at_round2.status, 0) << at_round2.err;
  EXPECT_NE(ReadAll(dir() + "/south-round2.csv"), ReadAll(dir() + "/south-final.csv"));
  EXPECT_DOUBLE_EQ(ScoreTestRows(dir() + "/south-round2.csv").accuracy,
                   Metric(2, "south/global_test_accuracy"));
}

// An exported .fsm carries the preprocessing: the same predictions.
TEST_F(CsvJobTest, AnExportedModelFilePredictsTheSame) {
  const std::string south = Example("fraud/data/south.csv");
  ASSERT_EQ(Predict(south, "from-run.csv").status, 0);
  ASSERT_EQ(Fedsilo("export " + run_id() + " --format fsm --out " + dir() + "/fraud.fsm" +
                    Workdir())
                .status,
            0);
  Output from_file = Fedsilo("predict " + dir() + "/fraud.fsm --data " + south + " --out " +
                             dir() + "/from-file.csv");
  ASSERT_EQ(from_file.status, 0) << from_file.err;
  EXPECT_EQ(ReadAll(dir() + "/from-file.csv"), ReadAll(dir() + "/from-run.csv"));
}

// Unlabelled rows with a missing value: imputed with the federation's mean.
TEST_F(CsvJobTest, UnlabelledRowsWithAMissingValueArePredicted) {
  std::ofstream(dir() + "/new.csv")
      << "amount,hour,merchant,distance_km,account_age_days,card_present,tx_last_24h\n"
      << "950.0,3,electronics,,20,0,9\n12.5,13,grocery,2.0,900,1,1\n";
  Output unlabelled = Fedsilo("predict " + run_id() + " --data " + dir() + "/new.csv" + Workdir());
  ASSERT_EQ(unlabelled.status, 0) << unlabelled.err;
  EXPECT_THAT(unlabelled.out, HasSubstr("row,predicted,p_0,p_1\n1,1,"));
  EXPECT_THAT(unlabelled.out, HasSubstr("\n2,0,"));
}

// Bad input: exit 2, naming the file and the column.
TEST_F(CsvJobTest, AFileWithoutAFeatureColumnIsNamedWithExitStatus2) {
  std::ofstream(dir() + "/bad.csv") << "amount,hour,merchant\n1,2,atm\n";
  Output bad = Fedsilo("predict " + run_id() + " --data " + dir() + "/bad.csv" + Workdir());
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.err, HasSubstr("feature column 'distance_km' is not in the file's header [" +
                                 dir() + "/bad.csv: columns: amount, hour, merchant]"));
}

TEST_F(CsvJobTest, ACatalogThatIsMissingOrWrongIsNamedWithExitStatus2) {
  Output missing = Fedsilo("run " + Example("fraud/fraud.yaml") + " --set data.catalog=" + dir() +
                           "/none.yaml" + Workdir());
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, HasSubstr("--set data.catalog: "));
  EXPECT_THAT(missing.err, HasSubstr(dir() + "/none.yaml: no such file (a dataset catalog"));
  std::ofstream(dir() + "/catalog.yaml")
      << "datasets:\n  transactions:\n    csv: " << Example("fraud/data") << "/{silo}.csv\n"
      << "    label: fraud\n";
  Output wrong_label = Fedsilo("run " + Example("fraud/fraud.yaml") + " --set data.catalog=" +
                               dir() + "/catalog.yaml" + Workdir());
  EXPECT_EQ(wrong_label.status, 2) << wrong_label.err;
  // What went to the orchestrator names the column; each silo's own log
  // (here the same terminal) also the file.
  EXPECT_THAT(wrong_label.err,
              HasSubstr("error: statistics: only 0 of 3 silos answered (federation.min_silos is "
                        "1): east: silo 'east': dataset 'transactions': label column 'fraud' is "
                        "not in the file's header;"));
  EXPECT_THAT(wrong_label.err,
              HasSubstr("in the file's header [" + Example("fraud/data") + "/east.csv: columns:"));
  Output not_a_catalog = Fedsilo("run " + Example("fraud/fraud.yaml") + " --set data.catalog=" +
                                 Example("fraud/fraud.yaml") + " --set training.rounds=1" +
                                 Workdir());
  EXPECT_EQ(not_a_catalog.status, 2) << not_a_catalog.err;
}

}  // namespace
}  // namespace fedsilo
