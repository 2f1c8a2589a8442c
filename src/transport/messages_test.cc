#include "transport/messages.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <utility>

namespace fedsilo::transport {
namespace {

using ::testing::HasSubstr;

TEST(TasksTest, EachPayloadNamesItsKindAndOnlyFitAndEvaluateCarryAModel) {
  const ModelState global;
  EXPECT_EQ(KindOf(FitTask{&global}), TaskKind::kFit);
  EXPECT_EQ(KindOf(StatisticsTask{}), TaskKind::kStatistics);
  EXPECT_EQ(KindOf(EvaluateTask{&global}), TaskKind::kEvaluate);
  EXPECT_EQ(ModelOf(FitTask{&global}), &global);
  EXPECT_EQ(ModelOf(EvaluateTask{&global}), &global);
  EXPECT_EQ(ModelOf(StatisticsTask{}), nullptr);
  EXPECT_EQ(ModelOf(FitTask{}), nullptr);
  EXPECT_EQ(TaskKindName(KindOf(EvaluateTask{})), "evaluate");
  // A request is a fit task unless it says otherwise.
  EXPECT_EQ(KindOf(TaskRequest{}.task), TaskKind::kFit);
}

EvaluateAnswer TwoClassAnswer() {
  EvaluateAnswer a;
  a.examples = 40;
  a.loss = 0.25;
  a.accuracy = 0.9;
  a.metrics_private = true;
  BinaryEvaluation& b = a.binary.emplace();
  b.precision = 0.8;
  b.recall = 0.75;
  b.auc = 0.93;
  b.true_positives = 6;
  b.false_positives = 2;
  b.false_negatives = 2;
  ScoreHistogram& h = b.scores.emplace();
  h.Add(2.0, true);
  h.Add(-1.0, false);
  return a;
}

TEST(AnswersTest, AnEvaluateAnswerTravelsAsAFitReplyAndComesBackTheSame) {
  const EvaluateAnswer sent = TwoClassAnswer();
  const FitReply reply = Encode(sent);
  StatusOr<EvaluateAnswer> got = DecodeEvaluateAnswer(reply, "bank");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->examples, 40);
  EXPECT_EQ(got->loss, 0.25);
  EXPECT_EQ(got->accuracy, 0.9);
  EXPECT_TRUE(got->metrics_private);
  ASSERT_TRUE(got->binary.has_value());
  EXPECT_EQ(got->binary->auc, 0.93);
  EXPECT_EQ(got->binary->true_positives, 6);
  EXPECT_EQ(got->binary->false_negatives, 2);
  ASSERT_TRUE(got->binary->scores.has_value());
  EXPECT_EQ(got->binary->scores->Auc(), sent.binary->scores->Auc());

  EvaluateAnswer many;
  many.examples = 9;
  many.loss = 1.5;
  many.accuracy = 0.4;
  StatusOr<EvaluateAnswer> plain = DecodeEvaluateAnswer(Encode(many), "bank");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->binary.has_value());
  EXPECT_TRUE(Encode(many).update.empty());
}

// What a broken or hostile silo may send instead of an evaluation.
TEST(AnswersTest, AnEvaluationWithoutRowsNumbersOrCountsIsRefused) {
  const auto refused = [](FitReply reply) { return DecodeEvaluateAnswer(reply, "bank").status(); };
  FitReply no_rows = Encode(TwoClassAnswer());
  no_rows.num_examples = 0;
  EXPECT_THAT(refused(no_rows).message(), HasSubstr("no test rows, loss or accuracy"));
  FitReply nan_loss = Encode(TwoClassAnswer());
  nan_loss.metrics["loss"] = std::nan("");
  EXPECT_TRUE(absl::IsInvalidArgument(refused(nan_loss)));
  FitReply no_accuracy = Encode(TwoClassAnswer());
  no_accuracy.metrics.erase("accuracy");
  EXPECT_TRUE(absl::IsInvalidArgument(refused(no_accuracy)));
  for (double bad : {-1.0, 2.5, std::numeric_limits<double>::infinity(), 1e300}) {
    FitReply counts = Encode(TwoClassAnswer());
    counts.metrics["false_positives"] = bad;
    EXPECT_THAT(refused(counts).message(), HasSubstr("lacks precision, recall or the counts"))
        << bad;
  }
  FitReply no_recall = Encode(TwoClassAnswer());
  no_recall.metrics.erase("recall");
  EXPECT_TRUE(absl::IsInvalidArgument(refused(no_recall)));
  // Scores that are not a histogram leave the counts: the federation then
  // averages the silos' AUCs instead of pooling their scores.
  FitReply no_histogram = Encode(TwoClassAnswer());
  no_histogram.update = ModelState();
  StatusOr<EvaluateAnswer> kept = DecodeEvaluateAnswer(no_histogram, "bank");
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_TRUE(kept->binary.has_value());
  EXPECT_FALSE(kept->binary->scores.has_value());
}

TEST(AnswersTest, AStatisticsAnswerTravelsAsAFitReplyOrIsRefusedNamingTheSilo) {
  FeatureSums sums = FeatureSums::For("fraud", {"age"}, 2);
  for (const auto& [age, label] : {std::pair<double, int64_t>{30, 0}, {40, 1}, {20, 1}}) {
    sums.AddRow(&age, label);
  }
  StatusOr<StatisticsAnswer> got =
      DecodeStatisticsAnswer(Encode(StatisticsAnswer{sums, true}), "bank");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->sums.rows(), 3);
  EXPECT_EQ(got->sums.features, sums.features);
  EXPECT_TRUE(got->metrics_private);
  EXPECT_EQ(Encode(StatisticsAnswer{sums, false}).num_examples, 3);

  FitReply not_sums;
  not_sums.num_examples = 3;
  StatusOr<StatisticsAnswer> refused = DecodeStatisticsAnswer(not_sums, "bank");
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("silo 'bank'"));
}

}  // namespace
}  // namespace fedsilo::transport
