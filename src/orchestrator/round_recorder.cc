#include "orchestrator/round_recorder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/mutex.h"
#include "core/unix_time.h"

namespace fedsilo::orchestrator {

Status RoundRecorder::Record(const tracking::MetricRecord& r) {
  // Round 0, the federated statistics, has no commit of its own: final once
  // computed, it goes on at once. A round's metrics wait for its commit.
  const bool now = also_ != nullptr && r.round == 0;
  {
    MutexLock lock(&mu_);
    rows_.push_back({r.round, r.source, r.name, r.value, r.time});
    if (also_ != nullptr && !now) uncommitted_.push_back(r);
  }
  return now ? also_->Record(r) : absl::OkStatus();
}

Status RoundRecorder::OnRoundEnd(const RoundSummary& s, const ModelState&, int total) {
  FEDSILO_RETURN_IF_ERROR(Commit(s));
  Status logged = LogRound(s, total);
  Status passed = PassOn();
  return logged.ok() ? passed : logged;
}

Status RoundRecorder::Commit(const RoundSummary& s) {
  std::vector<MetricRow> rows;
  std::vector<tracking::MetricRecord> taken;
  {
    MutexLock lock(&mu_);
    rows = std::exchange(rows_, {});
    taken = std::exchange(uncommitted_, {});
  }
  const RoundRecord r{s.round,         UnixNow(),         s.round_seconds,
                      s.silos_sampled, s.silos_succeeded, s.failures};
  FEDSILO_RETURN_IF_ERROR(store_->CompleteRound(job_id_, r, rows));
  MutexLock lock(&mu_);
  committed_.insert(committed_.end(), taken.begin(), taken.end());
  return absl::OkStatus();
}

Status RoundRecorder::PassOn() {
  std::vector<tracking::MetricRecord> committed;
  {
    MutexLock lock(&mu_);
    committed = std::exchange(committed_, {});
  }
  Status passed;
  for (const tracking::MetricRecord& m : committed) {
    Status sent = also_->Record(m);
    if (passed.ok()) passed = sent;
  }
  return passed;
}

Status RoundRecorder::LogRound(const RoundSummary& s, int total) {
  std::string line = absl::StrFormat("round %d/%d done in %.1fs: %d/%d silos", s.round, total,
                                     s.round_seconds, s.silos_succeeded, s.silos_sampled);
  for (const auto& [metric, value] : s.global_metrics) {
    absl::StrAppendFormat(&line, ", %s %.4f", metric, value);
  }
  FEDSILO_RETURN_IF_ERROR(store_->AddEvent(job_id_, "info", line));
  for (const std::string& f : s.failures) {
    FEDSILO_RETURN_IF_ERROR(
        store_->AddEvent(job_id_, "warn", absl::StrCat("round ", s.round, ": dropped ", f)));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::orchestrator
