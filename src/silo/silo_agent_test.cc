#include "silo/silo_agent.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/control_variates.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/kernels.h"
#include "core/model_state_file.h"
#include "secure/secagg.h"
#include "secure/storage_keys.h"
#include "silo/privacy_guard.h"

namespace fedsilo::silo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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
  transport::TaskRequest request{"run", 1, 42, &job, nullptr, transport::FitTask{&global}};
  StatusOr<transport::FitReply> reply = agent.RunTask(request);
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
  StatusOr<transport::FitReply> again = agent.RunTask(request);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->metrics, reply->metrics);
}

// The silo's policy, not the orchestrator, says whether its metrics may be
// exported: the reply says so, and the metrics still travel (for the run store).
// A curious or hostile orchestrator against one silo with a policy: the
// policy refuses before any model is built, a run's job cannot change under
// it, DP rounds are charged before they train and never past the plan,
// training metrics stay home under DP, and evaluations are bounded.
TEST(SiloAgentTest, ThePolicyDecidesBeforeAnythingRunsAndTheRunStaysAsAdmitted) {
  const std::string dir = ::testing::TempDir() + "/agent_policy";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/policy.yaml")
      << "datasets:\n  digits: {max_epsilon: 50, max_evaluations_per_run: 1}\n";
  auto guard = PrivacyGuard::Open(dir + "/policy.yaml", dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  auto data = Data();
  SiloAgent agent("hospital-a", Split(data), nullptr);
  agent.SetPrivacyGuard(guard->get(), "digits");
  JobConfig job = Job();
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  const ModelState global = (*model)->GetState();

  // Refused by the policy before the model is built: a module that does not
  // exist is never looked for.
  JobConfig scripted = job;
  scripted.model.kind = ModelKind::kTorchScript;
  scripted.model.torchscript = dir + "/no-such-module.pt";
  auto refused = agent.RunTask({"run-0", 1, 1, &scripted, nullptr, transport::FitTask{&global}});
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("(max_epsilon)"));
  EXPECT_THAT(std::string(refused.status().message()), Not(HasSubstr("no-such-module")));
  EXPECT_TRUE((*guard)->Entries().empty());

  job.privacy.dp.mode = DpMode::kLocal;
  job.privacy.dp.noise_multiplier = 1.0;
  job.training.rounds = 2;
  auto first = agent.RunTask({"run", 1, 1, &job, nullptr, transport::FitTask{&global}});
  ASSERT_TRUE(first.ok()) << first.status();
  const LedgerEntry entry = (*guard)->Entries()[0];
  EXPECT_EQ(entry.steps, entry.planned_steps / 2);  // one round of two, charged
  EXPECT_NEAR(first->metrics.at("epsilon"), entry.epsilon, 1e-12);
  // Under local DP the loss and accuracy measured on the rows stay here.
  EXPECT_EQ(first->metrics.count("train_loss"), 0u);
  EXPECT_EQ(first->metrics.count("test_accuracy"), 0u);

  // The orchestrator changes the job mid-run (here the noise: a smaller
  // multiplier would spend more), or asks for a third round.
  JobConfig changed = job;
  changed.privacy.dp.noise_multiplier = 0.3;
  EXPECT_THAT(
      std::string(agent.RunTask({"run", 2, 1, &changed, nullptr, transport::FitTask{&global}})
                      .status()
                      .message()),
      HasSubstr("carries a job other than the one admitted"));
  ASSERT_TRUE(agent.RunTask({"run", 2, 1, &job, nullptr, transport::FitTask{&global}}).ok());
  EXPECT_THAT(std::string(agent.RunTask({"run", 3, 1, &job, nullptr, transport::FitTask{&global}})
                              .status()
                              .message()),
              HasSubstr("past the " + std::to_string(entry.planned_steps) + " planned"));
  EXPECT_EQ((*guard)->Entries()[0].steps, entry.planned_steps);

  // One evaluation of the test rows, as the policy says; then no more.
  transport::TaskRequest evaluate{"run", 2, 1, &job, nullptr, transport::EvaluateTask{&global}};
  EXPECT_TRUE(agent.RunTask(evaluate).ok());
  EXPECT_THAT(std::string(agent.RunTask(evaluate).status().message()),
              HasSubstr("(max_evaluations_per_run)"));
}

// One secure-aggregation round driven as an orchestrator would, over the
// agents that have not `left` (they stop answering before the masked input).
// The errors of the silos that refused, as "silo: message".
StatusOr<secure::SecAggOutcome> SecureRound(std::vector<SiloAgent*> agents, const std::string& run,
                                            int round, int threshold, const ModelState& layout,
                                            const std::string& left,
                                            std::vector<std::string>* refusals) {
  std::vector<std::string> names;
  for (SiloAgent* a : agents) names.push_back(a->name());
  secure::SecAggParams params;
  params.threshold = threshold;
  params.max_weight = 1000;
  FEDSILO_ASSIGN_OR_RETURN(secure::SecAggRound r,
                           secure::SecAggRound::Create(run, round, params, names, layout));
  auto ask = [&](SiloAgent* a, const std::string& payload) -> StatusOr<std::string> {
    StatusOr<std::string> reply = a->SecureStep({run, round, payload});
    if (!reply.ok()) refusals->push_back(absl::StrCat(a->name(), ": ", reply.status().message()));
    return reply;
  };
  for (SiloAgent* a : agents) {
    if (auto reply = ask(a, r.AdvertiseRequest()); reply.ok()) {
      r.AcceptAdvertise(a->name(), *reply).IgnoreError();
    }
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string share, r.ShareKeysRequest());
  for (SiloAgent* a : agents) {
    if (auto reply = ask(a, share); reply.ok()) r.AcceptShareKeys(a->name(), *reply).IgnoreError();
  }
  FEDSILO_ASSIGN_OR_RETURN(auto masked, r.MaskedInputRequests());
  for (SiloAgent* a : agents) {
    if (a->name() == left || masked.count(a->name()) == 0) continue;
    if (auto reply = ask(a, masked[a->name()]); reply.ok()) {
      r.AcceptMaskedInput(a->name(), *reply).IgnoreError();
    }
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string consistency, r.ConsistencyRequest());
  for (SiloAgent* a : agents) {
    if (a->name() == left) continue;
    if (auto reply = ask(a, consistency); reply.ok()) {
      r.AcceptConsistency(a->name(), *reply).IgnoreError();
    }
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string unmask, r.UnmaskRequest());
  for (SiloAgent* a : agents) {
    if (a->name() == left) continue;
    if (auto reply = ask(a, unmask); reply.ok()) r.AcceptUnmask(a->name(), *reply).IgnoreError();
  }
  return r.Finish();
}

// An orchestrator that asks a secure round again, without one silo, to
// subtract the two sums: the silos' ledgers refuse, even after a restart.
TEST(SiloAgentTest, ASecureRoundAskedAgainOverOtherSilosIsRefusedFromTheLedger) {
  const std::string dir = ::testing::TempDir() + "/agent_reveals";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  JobConfig job = Job();
  job.privacy.secure_aggregation.enabled = true;
  job.federation.silos = {"a", "b", "c", "d"};
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  const ModelState global = (*model)->GetState();
  std::vector<std::unique_ptr<PrivacyGuard>> guards;
  std::vector<std::unique_ptr<SiloAgent>> agents;
  auto start = [&] {  // (again: restarted silos, on the same ledgers)
    agents.clear();
    guards.clear();
    for (const char* name : {"a", "b", "c", "d"}) {
      guards.push_back(*PrivacyGuard::Open("", absl::StrCat(dir, "/", name, ".json")));
      agents.push_back(std::make_unique<SiloAgent>(name, Split(Data()), nullptr));
      agents.back()->SetPrivacyGuard(guards.back().get(), "digits");
    }
  };
  auto train = [&](int round) {
    for (auto& a : agents) {
      StatusOr<transport::FitReply> reply =
          a->RunTask({"run", round, 1, &job, nullptr, transport::FitTask{&global}});
      ASSERT_TRUE(reply.ok()) << reply.status();
      EXPECT_EQ(reply->update.size(), 0u);  // kept for masking
    }
  };
  std::vector<SiloAgent*> all;
  std::vector<std::string> refusals;
  start();
  train(1);
  for (auto& a : agents) all.push_back(a.get());
  StatusOr<secure::SecAggOutcome> first = SecureRound(all, "run", 1, 3, global, "", &refusals);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(refusals.empty());
  EXPECT_EQ(first->contributors, 4);

  start();  // the silos restart; the orchestrator asks round 1 again without "d"
  train(1);
  all.clear();
  for (auto& a : agents) all.push_back(a.get());
  StatusOr<secure::SecAggOutcome> second = SecureRound(all, "run", 1, 3, global, "d", &refusals);
  EXPECT_FALSE(second.ok());
  ASSERT_EQ(refusals.size(), 3u);
  for (const std::string& r : refusals) {
    EXPECT_THAT(r, HasSubstr("already revealed its shares for round 1 of job 'run' over the "
                             "silos [a, b, c, d]"));
  }
  // The same sum again (an orchestrator that restarted) is answered.
  start();
  train(1);
  all.clear();
  refusals.clear();
  for (auto& a : agents) all.push_back(a.get());
  StatusOr<secure::SecAggOutcome> same = SecureRound(all, "run", 1, 3, global, "", &refusals);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(refusals.empty()) << refusals[0];
}

// The orchestrator knows the task's seed; the DP noise must not follow it.
// Two silos given the very same task train to the same update without DP,
// and to different ones with it.
TEST(SiloAgentTest, DpNoiseIsKeyedByTheSiloNotByTheTasksSeed) {
  auto data = Data();
  auto model = ml::Model::Create({Job().model, {3}, 3}, 5);
  const ModelState global = (*model)->GetState();
  auto update = [&](bool dp) {
    JobConfig job = Job();
    if (dp) {
      job.privacy.dp.mode = DpMode::kLocal;
      job.privacy.dp.noise_multiplier = 1.0;
    }
    SiloAgent agent("hospital-a", Split(data), nullptr);
    auto reply = agent.RunTask({"run", 1, 42, &job, nullptr, transport::FitTask{&global}});
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? reply->update : ModelState();
  };
  const ModelState plain_a = update(false), plain_b = update(false);
  EXPECT_EQ(plain_a.tensors()[0].floats()[0], plain_b.tensors()[0].floats()[0]);
  const ModelState noisy_a = update(true), noisy_b = update(true);
  size_t differ = 0, total = 0;
  for (size_t t = 0; t < noisy_a.size(); ++t) {
    for (size_t i = 0; i < noisy_a.tensors()[t].floats().size(); ++i, ++total) {
      differ += noisy_a.tensors()[t].floats()[i] != noisy_b.tensors()[t].floats()[i];
    }
  }
  EXPECT_EQ(differ, total);  // every value: fresh noise, fresh sampling
}

TEST(SiloAgentTest, PolicyMarksTheMetricsPrivate) {
  auto data = Data();
  JobConfig job = Job();
  job.data.dataset = "digits";
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  ASSERT_TRUE(model.ok());
  const ModelState global = (*model)->GetState();
  const std::string dir = ::testing::TempDir() + "/silo_agent_private";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  transport::TaskRequest request{"run", 1, 42, &job, nullptr, transport::FitTask{&global}};

  SiloAgent open("hospital-a", Split(data), nullptr);
  StatusOr<transport::FitReply> shared = open.RunTask(request);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_FALSE(shared->metrics_private);

  std::ofstream(dir + "/policy.yaml") << "datasets:\n  digits: {export_metrics: false}\n";
  auto guard = PrivacyGuard::Open(dir + "/policy.yaml", dir + "/ledger.json");
  ASSERT_TRUE(guard.ok()) << guard.status();
  SiloAgent closed("hospital-b", Split(data), nullptr);
  closed.SetPrivacyGuard(guard->get(), "digits");
  StatusOr<transport::FitReply> kept = closed.RunTask(request);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_TRUE(kept->metrics_private);
  EXPECT_EQ(kept->metrics.count("test_accuracy"), 1u);
}

// SCAFFOLD on the silo: the update carries Δc_i = c_i+ - c_i with
// c_i+ = c_i - c + (x - y_i) / (K lr); c_i is kept (in the state file) for the
// next round, including by a restarted agent.
TEST(SiloAgentTest, ScaffoldReturnsAndKeepsItsControlVariate) {
  auto data = Data();
  JobConfig job = Job();
  job.strategy.name = "scaffold";
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  ModelState sent = (*model)->GetState();
  ModelState c = sent.ZerosLike();
  for (Tensor& t : c.mutable_tensors()) {
    for (float& v : t.floats()) v = 0.01f;
  }
  ASSERT_TRUE(AppendControl(sent, c).ok());
  const std::string path = std::filesystem::temp_directory_path() / "fedsilo-scaffold-ci.fsm";
  std::filesystem::remove(path);
  SiloAgent agent("a", Split(data), nullptr);
  agent.SetControlVariatePath(path);
  StatusOr<transport::FitReply> reply =
      agent.RunTask({"run", 1, 42, &job, nullptr, transport::FitTask{&sent}});
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(reply->update.CheckSameLayout(sent).ok());
  auto [update, delta_c] = SplitControl(reply->update);
  // K = 7 steps (70 examples, batch 10), lr 0.1, c_i was 0:
  // Δc = -c - update / 0.7.
  const double k_lr = 7 * 0.1;
  for (size_t t = 0; t < update.size(); ++t) {
    for (size_t i = 0; i < update.tensors()[t].floats().size(); ++i) {
      EXPECT_NEAR(delta_c.tensors()[t].floats()[i], -0.01 - update.tensors()[t].floats()[i] / k_lr,
                  1e-5);
    }
  }
  StatusOr<ModelFile> kept = ReadModelStateFile(path);
  ASSERT_TRUE(kept.ok()) << kept.status();
  for (size_t t = 0; t < delta_c.size(); ++t) {  // c_i+ = 0 + Δc
    EXPECT_EQ(kept->state.tensors()[t].floats()[0], delta_c.tensors()[t].floats()[0]);
  }
  // Round 2 trains with the correction c - c_i: a restarted agent that reads
  // c_i back trains exactly like the one that kept it; one without it does not.
  SiloAgent restarted("a", Split(data), nullptr);
  restarted.SetControlVariatePath(path);
  StatusOr<transport::FitReply> resumed =
      restarted.RunTask({"run", 2, 43, &job, nullptr, transport::FitTask{&sent}});
  StatusOr<transport::FitReply> kept_going =
      agent.RunTask({"run", 2, 43, &job, nullptr, transport::FitTask{&sent}});
  SiloAgent forgetful("a", Split(data), nullptr);
  StatusOr<transport::FitReply> fresh =
      forgetful.RunTask({"run", 2, 43, &job, nullptr, transport::FitTask{&sent}});
  ASSERT_TRUE(resumed.ok() && kept_going.ok() && fresh.ok());
  EXPECT_EQ(SerializeModelState(resumed->update), SerializeModelState(kept_going->update));
  EXPECT_NE(SerializeModelState(fresh->update), SerializeModelState(kept_going->update));
  std::filesystem::remove(path);
}

// With SGD momentum m a local step moves lr / (1 - m) in the long run, and
// that is the step Δc divides by (docs/strategies.md: "a local step counts as lr / (1 - m)").
TEST(SiloAgentTest, ScaffoldCountsAMomentumStepAsLrOverOneMinusM) {
  auto data = Data();
  JobConfig job = Job();
  job.strategy.name = "scaffold";
  job.training.momentum = 0.5;
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  ModelState sent = (*model)->GetState();
  ModelState c = sent.ZerosLike();
  for (Tensor& t : c.mutable_tensors()) {
    for (float& v : t.floats()) v = 0.01f;
  }
  ASSERT_TRUE(AppendControl(sent, c).ok());
  SiloAgent agent("a", Split(data), nullptr);
  StatusOr<transport::FitReply> reply =
      agent.RunTask({"run", 1, 42, &job, nullptr, transport::FitTask{&sent}});
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto [update, delta_c] = SplitControl(reply->update);
  // K = 7 steps of lr 0.1 with m = 0.5: K x lr / (1 - m) = 1.4 (not 0.7).
  const double k_step = 7 * 0.1 / (1 - 0.5);
  double largest_difference_from_plain_lr = 0;
  for (size_t t = 0; t < update.size(); ++t) {
    for (size_t i = 0; i < update.tensors()[t].floats().size(); ++i) {
      const double u = update.tensors()[t].floats()[i];
      EXPECT_NEAR(delta_c.tensors()[t].floats()[i], -0.01 - u / k_step, 1e-5);
      largest_difference_from_plain_lr =
          std::max(largest_difference_from_plain_lr, std::fabs(u / k_step - u / (7 * 0.1)));
    }
  }
  EXPECT_GT(largest_difference_from_plain_lr, 1e-3);  // the two formulas are told apart
}

// training.lr_decay: round r trains with learning_rate x lr_decay^(r - 1).
TEST(SiloAgentTest, LaterRoundsTrainWithTheDecayedLearningRate) {
  auto data = Data();
  auto model = ml::Model::Create({Job().model, {3}, 3}, 5);
  ASSERT_TRUE(model.ok());
  const ModelState global = (*model)->GetState();
  const auto update = [&](double learning_rate, double decay, int round) {
    JobConfig job = Job();
    job.training.learning_rate = learning_rate;
    job.training.lr_decay = decay;
    SiloAgent agent("a", Split(data), nullptr);
    StatusOr<transport::FitReply> reply =
        agent.RunTask({"run", round, 42, &job, nullptr, transport::FitTask{&global}});
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? reply->update : ModelState();
  };
  const auto same = [](const ModelState& a, const ModelState& b) {
    for (size_t t = 0; t < a.size(); ++t) {
      if (!std::equal(a.tensors()[t].floats().begin(), a.tensors()[t].floats().end(),
                      b.tensors()[t].floats().begin())) {
        return false;
      }
    }
    return a.size() == b.size() && a.size() > 0;
  };
  const ModelState decayed = update(0.1, 0.5, 3);
  EXPECT_TRUE(same(decayed, update(0.025, 1.0, 3)));  // 0.1 x 0.5^2
  EXPECT_FALSE(same(decayed, update(0.1, 1.0, 3)));
  EXPECT_TRUE(same(update(0.1, 0.5, 1), update(0.1, 1.0, 1)));  // round 1 keeps the rate
}

// Its c_i says how this silo's data pulls the model: kept sealed like the
// silo's other state (docs/encryption-at-rest.md).
TEST(SiloAgentTest, ScaffoldsControlVariateIsSealedAtRestWhenASealerIsInstalled) {
  auto data = Data();
  JobConfig job = Job();
  job.strategy.name = "scaffold";
  auto model = ml::Model::Create({job.model, {3}, 3}, 5);
  ModelState sent = (*model)->GetState();
  ASSERT_TRUE(AppendControl(sent, sent.ZerosLike()).ok());
  const std::string dir = std::filesystem::temp_directory_path() / "fedsilo-scaffold-sealed";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/scaffold-run.fsm";
  const secure::KeyRing ring = secure::NewKeyRing();
  SetFileSealer(std::make_shared<secure::AeadFileSealer>(ring));
  SiloAgent agent("a", Split(data), nullptr);
  agent.SetControlVariatePath(path);
  StatusOr<transport::FitReply> first =
      agent.RunTask({"run", 1, 42, &job, nullptr, transport::FitTask{&sent}});
  ASSERT_TRUE(first.ok()) << first.status();
  StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(IsSealed(*bytes));
  // Read back under the ring, a restarted agent goes on like the one that kept it.
  SiloAgent restarted("a", Split(data), nullptr);
  restarted.SetControlVariatePath(path);
  StatusOr<transport::FitReply> resumed =
      restarted.RunTask({"run", 2, 43, &job, nullptr, transport::FitTask{&sent}});
  StatusOr<transport::FitReply> kept_going =
      agent.RunTask({"run", 2, 43, &job, nullptr, transport::FitTask{&sent}});
  SetFileSealer(nullptr);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE(kept_going.ok()) << kept_going.status();
  EXPECT_EQ(SerializeModelState(resumed->update), SerializeModelState(kept_going->update));
  // Without the ring it does not open.
  StatusOr<ModelFile> plain = ReadModelStateFile(path);
  ASSERT_FALSE(plain.ok());
  EXPECT_THAT(std::string(plain.status().message()), HasSubstr("the file is encrypted"));
  std::filesystem::remove_all(dir);
}

TEST(SiloAgentTest, ErrorsNameTheSiloAndRound) {
  JobConfig job = Job();
  ModelState wrong;
  ASSERT_TRUE(wrong.Add(Tensor::FromFloats("fc1.weight", {1}, {0})).ok());
  SiloAgent agent("bank-b", Split(Data()), nullptr);
  transport::TaskRequest request{"run", 4, 1, &job, nullptr, transport::FitTask{&wrong}};
  StatusOr<transport::FitReply> reply = agent.RunTask(request);
  ASSERT_FALSE(reply.ok());
  EXPECT_THAT(reply.status().message(), HasSubstr("silo 'bank-b': round 4: model state"));
}

// A job's module is called with its round timeout as the deadline, at least
// a minute and at most what the silo allows (the sandbox's own timeout).
TEST(SiloAgentTest, AModuleCallsDeadlineIsTheRoundTimeoutBetweenAMinuteAndTheSilosMost) {
  using std::chrono::seconds;
  EXPECT_EQ(ModuleCallDeadline(seconds(3600), 600), seconds(600));
  EXPECT_EQ(ModuleCallDeadline(seconds(3600), 2), seconds(60));
  EXPECT_EQ(ModuleCallDeadline(seconds(3600), 7 * 24 * 3600), seconds(3600));
  EXPECT_EQ(ModuleCallDeadline(seconds(30), 600), seconds(30));
}

}  // namespace
}  // namespace fedsilo::silo
