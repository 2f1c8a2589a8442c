#include "silo/silo_agent.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

namespace fedsilo::silo {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<ml::Dataset> Data() {
  auto d = std::make_shared<ml::Dataset>();
  d->example_shape = {3};
  d->num_classes = 3;
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0, 1);
  for (int i = 0; i < 90; ++i) {
    const int label = i % 3;
    for (int j = 0; j < 3; ++j) d->features.push_back(g(rng) * 0.3f + (j == label ? 2.0f : 0.0f));
    d->labels.push_back(label);
  }
  return d;
}

JobConfig Job() {
  JobConfig job;
  job.model.kind = ModelKind::kMlp;
  job.model.hidden = {8};
  job.training.learning_rate = 0.1;
  job.training.batch_size = 10;
  return job;
}

ml::SiloData Split(std::shared_ptr<ml::Dataset> d) {
  ml::SiloData s;
  s.train.dataset = s.test.dataset = d;
  for (int64_t i = 0; i < d->size(); ++i) (i < 70 ? s.train : s.test).indices.push_back(i);
  return s;
}

TEST(SiloAgentTest, ReturnsTheUpdateItsSizeAndItsMetrics) {
  auto data = Data();
  JobConfig job = Job();
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  ASSERT_TRUE(model.ok());
  const ModelState global = (*model)->GetState();
  BusyClock busy;
  SiloAgent agent("hospital-a", Split(data), &busy);
  transport::FitRequest request{"run", 1, 42, &job, &global};
  StatusOr<transport::FitReply> reply = agent.Fit(request);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->num_examples, 70);
  EXPECT_TRUE(reply->update.CheckSameLayout(global).ok());
  for (const char* key : {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}) {
    EXPECT_EQ(reply->metrics.count(key), 1u) << key;
  }
  EXPECT_GT(busy.BusySeconds(), 0.0);

  // The update is the local model minus the global one: applying it to the
  // global model gives a model that scores like the silo's own.
  ModelState local = global;
  for (size_t t = 0; t < local.size(); ++t) {
    auto out = local.mutable_tensors()[t].floats();
    auto delta = reply->update.tensors()[t].floats();
    for (size_t j = 0; j < out.size(); ++j) out[j] += delta[j];
  }
  ASSERT_TRUE((*model)->SetState(local).ok());
  ml::DataView test = Split(data).test;
  EXPECT_NEAR((*model)->Evaluate(test)->accuracy, reply->metrics["test_accuracy"], 1e-9);
  EXPECT_GT(reply->metrics["test_accuracy"], 0.8);

  // Same request, same answer.
  StatusOr<transport::FitReply> again = agent.Fit(request);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->metrics, reply->metrics);
}

TEST(SiloAgentTest, ErrorsNameTheSiloAndRound) {
  JobConfig job = Job();
  ModelState wrong;
  ASSERT_TRUE(wrong.Add(Tensor::FromFloats("fc1.weight", {1}, {0})).ok());
  SiloAgent agent("bank-b", Split(Data()), nullptr);
  transport::FitRequest request{"run", 4, 1, &job, &wrong};
  StatusOr<transport::FitReply> reply = agent.Fit(request);
  ASSERT_FALSE(reply.ok());
  EXPECT_THAT(reply.status().message(), HasSubstr("silo 'bank-b': round 4: model state"));
}

}  // namespace
}  // namespace fedsilo::silo
