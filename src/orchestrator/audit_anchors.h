// AuditAnchors: the silos' signed audit log heads (secure::SignedAuditHead),
// kept by the orchestrator as anchors a silo's operator cannot take back: one
// file per silo, <state>/audit-anchors/<silo>.jsonl, one JSON line per head
// (secure::AuditHeadLine), appended and fsynced. `fedsilo audit verify LOG
// --anchors FILE --ca CA` checks a silo's log against them.
//
// Each kept head is also recorded in the orchestrator's own audit log
// ("silo_audit_head"), so it is part of that keyed chain too.
//
// Thread safety: Record() may be called from any thread.
#ifndef FEDSILO_ORCHESTRATOR_AUDIT_ANCHORS_H_
#define FEDSILO_ORCHESTRATOR_AUDIT_ANCHORS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "core/status.h"
#include "secure/audit_log.h"

namespace fedsilo::orchestrator {

class AuditAnchors {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  // Creates `dir` (0700) if needed. `audit` (not owned; may be null).
  static StatusOr<std::unique_ptr<AuditAnchors>> Open(std::string dir, secure::AuditLog* audit,
                                                      Clock clock = nullptr);

  // Keeps `head` (already verified) unless it repeats the last one kept for
  // its silo, the silo had more than kBurst heads kept lately (one more is
  // allowed every kRefill), or its file reached kMaxFileBytes: a silo cannot
  // fill the disk. A head behind the last one kept (fewer entries), or at
  // the same entry with another hash, is reported with a warning in the log
  // and an audit entry: that silo's audit log was cut back or rewritten.
  void Record(const secure::SignedAuditHead& head);

  // The file of a silo's anchors.
  std::string PathOf(const std::string& silo) const;

 private:
  static constexpr double kBurst = 20;
  static constexpr std::chrono::seconds kRefill{10};
  static constexpr uintmax_t kMaxFileBytes = 64u << 20;
  struct Last {
    secure::AuditAnchor head;
    double allowance = kBurst;  // heads it may send now
    std::chrono::system_clock::time_point counted;  // when allowance was last topped up
  };
  AuditAnchors(std::string dir, secure::AuditLog* audit, Clock clock)
      : dir_(std::move(dir)), audit_(audit), clock_(std::move(clock)) {}
  // The last head kept for `silo`, read from its file the first time.
  std::optional<Last> LastOf(const std::string& silo) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  secure::AuditLog* const audit_;
  const Clock clock_;
  Mutex mu_;
  std::map<std::string, std::optional<Last>> last_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> full_ ABSL_GUARDED_BY(mu_);  // silos whose file is full (said once)
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_AUDIT_ANCHORS_H_
