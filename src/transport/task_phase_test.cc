#include "transport/task_phase.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>

namespace fedsilo::transport {
namespace {

constexpr TaskPhase kAll[] = {TaskPhase::kIdle,       TaskPhase::kTaskSent,
                              TaskPhase::kHolding,    TaskPhase::kUploading,
                              TaskPhase::kSecureSent, TaskPhase::kSecureReceiving};

// The diagram in task_phase.h, edge by edge: a task goes out, its result
// comes, its update is asked for; a secure-aggregation step goes out and its
// reply comes; any of them ends. Nothing else: no second result header
// (holding -> holding), no upload before the result, no reply header to a
// task, no new task while one is out.
TEST(TaskPhaseTest, OnlyTheDiagramsMovesAreAllowed) {
  using P = TaskPhase;
  std::set<std::pair<P, P>> allowed = {{P::kIdle, P::kTaskSent},
                                       {P::kTaskSent, P::kHolding},
                                       {P::kHolding, P::kUploading},
                                       {P::kIdle, P::kSecureSent},
                                       {P::kSecureSent, P::kSecureReceiving}};
  for (P from : kAll) allowed.insert({from, P::kIdle});
  for (P from : kAll) {
    for (P to : kAll) {
      EXPECT_EQ(MayMove(from, to), allowed.count({from, to}) == 1)
          << TaskPhaseName(from) << " -> " << TaskPhaseName(to);
    }
  }
}

TEST(TaskPhaseTest, BusyAndSecureStepSayWhatIsOut) {
  for (TaskPhase p : kAll) {
    EXPECT_EQ(IsBusy(p), p != TaskPhase::kIdle) << TaskPhaseName(p);
    EXPECT_EQ(IsSecureStep(p),
              p == TaskPhase::kSecureSent || p == TaskPhase::kSecureReceiving)
        << TaskPhaseName(p);
    EXPECT_NE(TaskPhaseName(p), "?");
  }
}

}  // namespace
}  // namespace fedsilo::transport
