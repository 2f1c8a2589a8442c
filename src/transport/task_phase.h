// TaskPhase: where a silo's session with the orchestrator stands in the one
// task (or secure-aggregation step) it may have out at a time. Every change
// goes through MayMove(), so a message that arrives in the wrong phase (a
// stale result, an update nobody asked for, a second reply header) cannot
// move the session anywhere.
//
//   kIdle ─Claim─▶ kTaskSent ─result header─▶ kHolding ─ask─▶ kUploading
//     └───Claim──▶ kSecureSent ─reply header─▶ kSecureReceiving
//
// Every phase goes back to kIdle when its task ends (done, failed, timed
// out, cancelled, or its update dropped unread).
#ifndef FEDSILO_TRANSPORT_TASK_PHASE_H_
#define FEDSILO_TRANSPORT_TASK_PHASE_H_

#include "absl/strings/string_view.h"

namespace fedsilo::transport {

enum class TaskPhase {
  kIdle,             // free for a task
  kTaskSent,         // a task is out; its result has not come
  kHolding,          // its result came; the update waits at the silo
  kUploading,        // the update was asked for
  kSecureSent,       // a secure-aggregation step is out
  kSecureReceiving,  // its reply's header came; the payload is on its way
};

// Whether a session in phase `from` may move to `to` (the diagram above).
constexpr bool MayMove(TaskPhase from, TaskPhase to) {
  switch (to) {
    case TaskPhase::kIdle:
      return true;  // a task ends from any phase (and ending twice changes nothing)
    case TaskPhase::kTaskSent:
    case TaskPhase::kSecureSent:
      return from == TaskPhase::kIdle;
    case TaskPhase::kHolding:
      return from == TaskPhase::kTaskSent;
    case TaskPhase::kUploading:
      return from == TaskPhase::kHolding;
    case TaskPhase::kSecureReceiving:
      return from == TaskPhase::kSecureSent;
  }
  return false;
}

// A task or a secure-aggregation step is out (the session is not free).
constexpr bool IsBusy(TaskPhase phase) { return phase != TaskPhase::kIdle; }
constexpr bool IsSecureStep(TaskPhase phase) {
  return phase == TaskPhase::kSecureSent || phase == TaskPhase::kSecureReceiving;
}

constexpr absl::string_view TaskPhaseName(TaskPhase phase) {
  switch (phase) {
    case TaskPhase::kIdle:
      return "idle";
    case TaskPhase::kTaskSent:
      return "task sent";
    case TaskPhase::kHolding:
      return "holding its update";
    case TaskPhase::kUploading:
      return "uploading";
    case TaskPhase::kSecureSent:
      return "secure-aggregation step sent";
    case TaskPhase::kSecureReceiving:
      return "receiving a secure-aggregation reply";
  }
  return "?";
}

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_TASK_PHASE_H_
