// A bounded soak of the real federation: while a job runs, silos and the
// orchestrator are killed (SIGKILL) and started again, over and over. Every
// round must be recorded exactly once, and the job must end with the model
// of a run nobody disturbed (the same job in simulation), value for value.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "federation_processes.h"
#include "orchestrator/job_store.h"

namespace fedsilo {
namespace {

using testing_util::Federation;
using testing_util::LastJson;
using testing_util::Output;
using testing_util::Read;
using testing_util::SameValues;
using testing_util::Tensors;
using namespace std::chrono_literals;

// All three silos in every round: a round that loses one is run again, so
// the model cannot depend on who was killed when.
constexpr char kJob[] =
    "name: soak\n"
    "data: {dataset: digits}\n"
    "model: {name: mlp}\n"
    "training: {rounds: 8, learning_rate: 0.1, local_epochs: 120}\n"
    "federation: {silos: [a, b, c], min_silos: 3, wait_for_silos: 120, round_retries: 30}\n"
    "strategy: {name: fedadam}\n";

TEST(SoakTest, KilledSilosAndOrchestratorLeaveEachRoundOnceAndTheUndisturbedModel) {
  Federation fed("soak");
  ASSERT_TRUE(fed.StartOrchestrator()) << Read(fed.dir() + "/orchestrator.log");
  const int port = fed.port();
  for (const char* s : {"a", "b", "c"}) fed.StartSilo(s);
  const std::string job = fed.WriteJob("job", kJob);
  ASSERT_EQ(fed.User("submit " + job).status, 0);

  // A kill every second or so until the job is done: the orchestrator at the
  // 2nd and 5th, otherwise a silo drawn from a fixed seed. (Fewer under a
  // sanitizer, where everything takes longer.)
#ifdef FEDSILO_SANITIZED
  constexpr int kKills = 4;
#else
  constexpr int kKills = 7;
#endif
  std::mt19937 rng(20261202);
  int silo_kills = 0, orchestrator_kills = 0;
  for (int kill = 1; kill <= kKills; ++kill) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 600));
    if (fed.Status("job-1").value("state", "") == "done") break;
    if (kill == 2 || kill == 5) {
      fed.Kill("orchestrator", SIGKILL);
      ++orchestrator_kills;
      ASSERT_TRUE(fed.StartOrchestrator(port)) << Read(fed.dir() + "/orchestrator.log");
    } else {
      const std::string victim(1, static_cast<char>('a' + rng() % 3));
      fed.Kill(victim, SIGKILL);
      ++silo_kills;
      fed.StartSilo(victim);
    }
  }
  EXPECT_GE(silo_kills, 3) << "the job finished before the kills could land";
  EXPECT_GE(orchestrator_kills, 1);

  Output waited = fed.User("status job-1 --wait");
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err << Read(fed.dir() + "/orchestrator.log");
  const nlohmann::json status = fed.Status("job-1");
  EXPECT_EQ(status["state"], "done");
  for (const auto& s : status["silos"]) EXPECT_EQ(s["rounds_taken_part"], 8) << s;

  // Each round once in the orchestrator's store, in order.
  fed.Kill("orchestrator", SIGTERM);
  auto store = orchestrator::JobStore::Open(fed.dir() + "/state/fedsilo.db");
  ASSERT_TRUE(store.ok()) << store.status();
  auto rounds = (*store)->Rounds("job-1");
  ASSERT_TRUE(rounds.ok()) << rounds.status();
  ASSERT_EQ(rounds->size(), 8u);
  for (size_t r = 0; r < rounds->size(); ++r) {
    EXPECT_EQ((*rounds)[r].round, static_cast<int>(r) + 1);
    EXPECT_EQ((*rounds)[r].silos_succeeded, 3);
  }
  const std::string log = Read(fed.dir() + "/orchestrator.log");
  EXPECT_THAT(log, ::testing::HasSubstr("running it again"));

  // The model is the undisturbed run's.
  ASSERT_TRUE(fed.StartOrchestrator(port));
  const std::string model = fed.dir() + "/model.fsm";
  ASSERT_EQ(fed.User("download job-1 --out " + model).status, 0);
  Output sim = fed.Run("run " + job + " --quiet --json --workdir " + fed.dir());
  ASSERT_EQ(sim.status, 0) << sim.err;
  EXPECT_TRUE(SameValues(Tensors(model), Tensors(LastJson(sim.out)["final_model"])));
}

}  // namespace
}  // namespace fedsilo
