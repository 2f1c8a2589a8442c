#include "orchestrator/vertical_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/mutex.h"
#include "core/unix_time.h"
#include "secure/psi.h"

namespace fedsilo::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;

// Test rows are scored in slices of this many.
constexpr int64_t kEvaluationRows = 4096;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Status OfParty(const Status& status, const std::string& party) {
  return Annotate(status, absl::StrCat("party '", party, "'"));
}

}  // namespace

VerticalRun::VerticalRun(JobConfig job, std::vector<transport::VerticalParty*> parties,
                         VerticalRunOptions options)
    : job_(std::move(job)),
      parties_(std::move(parties)),
      options_(std::move(options)),
      pool_(std::clamp<int>(static_cast<int>(parties_.size()), 1, 8)) {
  slot_.resize(parties_.size(), 0);
  for (size_t i = 0; i < parties_.size(); ++i) {
    if (parties_[i]->name() == job_.vertical.label_owner) {
      owner_ = i;
    } else {
      slot_[i] = others_.size();
      others_.push_back(i);
    }
  }
}

VerticalRun::~VerticalRun() = default;

void VerticalRun::Event(const std::string& level, const std::string& message) {
  if (options_.event) options_.event(level, message);
}

Status VerticalRun::Record(int round, const std::string& metric, double value) {
  if (options_.metrics == nullptr) return absl::OkStatus();
  return options_.metrics->Record(
      {round, "global", absl::StrCat("global/", metric), value, UnixNow(), true});
}

Status VerticalRun::OnEach(const std::vector<size_t>& indices,
                           const std::function<Status(size_t)>& fn) {
  std::vector<Status> results(indices.size());
  std::vector<double> seconds(indices.size(), 0.0);
  const auto timed = [&](size_t k) {
    const Clock::time_point start = Clock::now();
    Status s;
    try {
      s = fn(indices[k]);
    } catch (const std::exception& e) {  // never unwind past the workers
      s = absl::InternalError(
          absl::StrCat("party '", parties_[indices[k]]->name(), "': ", e.what()));
    }
    seconds[k] = Since(start);
    return s;
  };
  Mutex mu;
  CondVar done_cv;
  size_t done = 0;
  for (size_t k = 1; k < indices.size(); ++k) {
    pool_.Schedule([&, k] {
      Status s = timed(k);
      MutexLock lock(&mu);
      results[k] = std::move(s);
      ++done;
      done_cv.SignalAll();
    });
  }
  if (!indices.empty()) results[0] = timed(0);
  {
    MutexLock lock(&mu);
    while (done + 1 < indices.size()) done_cv.Wait(&mu);
  }
  if (!seconds.empty()) party_seconds_ += *std::max_element(seconds.begin(), seconds.end());
  for (const Status& s : results) FEDSILO_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

StatusOr<VerticalAlignment> VerticalRun::Align() {
  const size_t n = parties_.size();
  std::vector<size_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  const Clock::time_point start = Clock::now();
  // Each party's set, blinded by its own scalar and then, one step at a
  // time, by every other party's: at step s, set i is with party i + s, so
  // that no party is asked twice at once.
  std::vector<transport::BlindedSet> sets(n);
  // Each answer must be the set asked about, one hop further.
  const auto check = [&](const transport::BlindedSet& got, size_t origin, int hops,
                         const std::string& from) -> Status {
    if (got.origin != parties_[origin]->name() || got.hops != hops) {
      return absl::InvalidArgumentError(absl::StrCat(
          "party '", from, "' answered with the set of '", got.origin, "' after ", got.hops,
          " blindings; expected that of '", parties_[origin]->name(), "' after ", hops));
    }
    return absl::OkStatus();
  };
  FEDSILO_RETURN_IF_ERROR(OnEach(all, [&](size_t i) -> Status {
    StatusOr<transport::BlindedSet> set = parties_[i]->BlindOwnIds(options_.domain);
    if (!set.ok()) return OfParty(set.status(), parties_[i]->name());
    FEDSILO_RETURN_IF_ERROR(check(*set, i, 1, parties_[i]->name()));
    sets[i] = *std::move(set);
    return absl::OkStatus();
  }));
  for (size_t step = 1; step < n; ++step) {
    FEDSILO_RETURN_IF_ERROR(OnEach(all, [&](size_t i) -> Status {
      transport::VerticalParty* at = parties_[(i + step) % n];
      StatusOr<transport::BlindedSet> again = at->Reblind(sets[i]);
      if (!again.ok()) return OfParty(again.status(), at->name());
      FEDSILO_RETURN_IF_ERROR(check(*again, i, static_cast<int>(step) + 1, at->name()));
      sets[i] = *std::move(again);
      return absl::OkStatus();
    }));
  }
  std::vector<absl::string_view> points;
  for (const transport::BlindedSet& set : sets) points.push_back(set.points);
  StatusOr<std::vector<std::vector<int64_t>>> rows = secure::IntersectBlinded(points);
  if (!rows.ok()) {
    // Errors there name a party by its position.
    return Annotate(rows.status(), "the intersection of the parties' ids");
  }
  VerticalAlignment alignment;
  alignment.intersection = static_cast<int64_t>((*rows)[0].size());
  if (alignment.intersection == 0) {
    // (Not their sizes: whoever submitted the job reads this.)
    std::vector<std::string> names;
    for (const transport::VerticalParty* p : parties_) names.push_back(p->name());
    return absl::FailedPreconditionError(absl::StrCat(
        "the parties share no ids (", absl::StrJoin(names, ", "),
        "): check that every party's catalog names the same id column, written alike"));
  }
  Event("info",
        absl::StrCat("private set intersection: ", alignment.intersection,
                     " people every party holds, in ", absl::StrFormat("%.1f", Since(start)), "s"));
  std::vector<transport::AlignedRows> aligned(n);
  FEDSILO_RETURN_IF_ERROR(OnEach(all, [&](size_t i) -> Status {
    StatusOr<transport::AlignedRows> a = parties_[i]->Align((*rows)[i], sets[i]);
    if (!a.ok()) return OfParty(a.status(), parties_[i]->name());
    aligned[i] = *a;
    return absl::OkStatus();
  }));
  alignment.train = aligned[owner_].train;
  alignment.test = aligned[owner_].test;
  for (size_t i = 0; i < n; ++i) {
    if (aligned[i].order_digest != aligned[owner_].order_digest) {
      return absl::FailedPreconditionError(absl::StrCat(
          "party '", parties_[i]->name(), "' holds other people, or in another order, than the ",
          "label owner '", parties_[owner_]->name(),
          "' (their aligned ids' digests differ): every party must run the same release"));
    }
    if (aligned[i].train != alignment.train || aligned[i].test != alignment.test ||
        aligned[i].train + aligned[i].test != alignment.intersection) {
      return absl::FailedPreconditionError(
          absl::StrCat("party '", parties_[i]->name(), "' aligned ", aligned[i].train,
                       " training and ", aligned[i].test, " test rows; the label owner '",
                       parties_[owner_]->name(), "' ", alignment.train, " and ", alignment.test,
                       ", of ", alignment.intersection, " in the intersection"));
    }
  }
  const bool scoring = !job_.vertical.predict_with.empty();
  if (scoring && (alignment.train != 0 || alignment.test == 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("predicting with run '", job_.vertical.predict_with, "', the parties aligned ",
                     alignment.train, " training rows and ", alignment.test,
                     " to score; expected none and ", alignment.intersection));
  }
  if (!scoring && (alignment.train == 0 || alignment.test == 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", alignment.intersection,
                     " people in the intersection leave no training or no test rows "
                     "(data.test_fraction ",
                     job_.data.test_fraction, ")"));
  }
  FEDSILO_RETURN_IF_ERROR(
      Record(0, "psi_intersection", static_cast<double>(alignment.intersection)));
  FEDSILO_RETURN_IF_ERROR(Record(0, "train_rows", static_cast<double>(alignment.train)));
  FEDSILO_RETURN_IF_ERROR(Record(0, "test_rows", static_cast<double>(alignment.test)));
  return alignment;
}

StatusOr<std::vector<std::vector<float>>> VerticalRun::CutOutputs(
    const transport::RowSelection& rows) {
  const size_t want = rows.positions.size() * static_cast<size_t>(job_.vertical.cut_width);
  std::vector<std::vector<float>> outputs(others_.size());
  FEDSILO_RETURN_IF_ERROR(OnEach(others_, [&](size_t i) -> Status {
    transport::VerticalParty* party = parties_[i];
    StatusOr<std::vector<float>> out = party->Forward(rows);
    if (!out.ok()) return OfParty(out.status(), party->name());
    if (out->size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("party '", party->name(), "' sent ", out->size(), " cut-layer values for ",
                       rows.positions.size(), " rows; expected ", want));
    }
    if (!std::all_of(out->begin(), out->end(), [](float v) { return std::isfinite(v); })) {
      return absl::InvalidArgumentError(
          absl::StrCat("party '", party->name(), "' sent cut-layer values that are not finite"));
    }
    outputs[slot_[i]] = *std::move(out);
    return absl::OkStatus();
  }));
  return outputs;
}

Status VerticalRun::TrainBatch(const std::vector<int64_t>& positions) {
  const transport::RowSelection rows{false, positions};
  FEDSILO_ASSIGN_OR_RETURN(std::vector<std::vector<float>> outputs, CutOutputs(rows));
  StatusOr<transport::TopStepResult> top;
  FEDSILO_RETURN_IF_ERROR(OnEach({owner_}, [&](size_t i) {
    top = parties_[i]->TopStep(rows, outputs);
    return absl::OkStatus();
  }));
  if (!top.ok()) return OfParty(top.status(), parties_[owner_]->name());
  if (top->gradients.size() != others_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the label owner '", parties_[owner_]->name(),
                                                   "' sent ", top->gradients.size(),
                                                   " gradients for ", others_.size(), " parties"));
  }
  return OnEach(others_, [&](size_t i) -> Status {
    return OfParty(parties_[i]->Backward(top->gradients[slot_[i]]), parties_[i]->name());
  });
}

StatusOr<transport::RoundMetrics> VerticalRun::Evaluate(int64_t test_rows) {
  for (int64_t begin = 0; begin < test_rows; begin += kEvaluationRows) {
    transport::RowSelection rows{true, {}};
    for (int64_t p = begin; p < std::min(test_rows, begin + kEvaluationRows); ++p) {
      rows.positions.push_back(p);
    }
    FEDSILO_ASSIGN_OR_RETURN(std::vector<std::vector<float>> outputs, CutOutputs(rows));
    FEDSILO_RETURN_IF_ERROR(OnEach({owner_}, [&](size_t i) {
      return OfParty(parties_[i]->TopEvaluate(rows, outputs), parties_[i]->name());
    }));
  }
  StatusOr<transport::RoundMetrics> metrics = parties_[owner_]->EndRound();
  if (!metrics.ok()) return OfParty(metrics.status(), parties_[owner_]->name());
  // Names and values that go to the run store and the trackers.
  static const std::set<std::string> kKnown = {"loss", "accuracy", "precision", "recall", "auc"};
  bool fits = std::isfinite(metrics->train_loss);
  for (const auto& [name, value] : metrics->test) {
    fits = fits && kKnown.count(name) > 0 && std::isfinite(value);
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the label owner '", parties_[owner_]->name(),
        "' sent round metrics other than loss, accuracy, precision, recall and auc, or values "
        "that are not finite"));
  }
  return metrics;
}

StatusOr<VerticalResult> VerticalRun::Train(const VerticalAlignment& alignment) {
  VerticalResult result;
  result.alignment = alignment;
  const int rounds = job_.training.rounds;  // 1 when predicting
  std::vector<size_t> all(parties_.size());
  std::iota(all.begin(), all.end(), 0);
  const Clock::time_point start = Clock::now();
  party_seconds_ = 0;
  for (int round = 1; round <= rounds; ++round) {
    if (options_.stop != nullptr && options_.stop->load()) {
      return absl::CancelledError(absl::StrCat("stopped before round ", round));
    }
    const Clock::time_point round_start = Clock::now();
    FEDSILO_RETURN_IF_ERROR(OnEach(all, [&](size_t i) {
      return OfParty(parties_[i]->BeginRound(round), parties_[i]->name());
    }));
    // Positions only: which rows they are, each party knows by itself.
    for (const std::vector<int64_t>& positions : VerticalBatches(job_, round, alignment.train)) {
      FEDSILO_RETURN_IF_ERROR(Annotate(TrainBatch(positions), absl::StrCat("round ", round)));
    }
    FEDSILO_ASSIGN_OR_RETURN(transport::RoundMetrics metrics, Evaluate(alignment.test));
    RoundSummary summary;
    summary.round = round;
    summary.silos_sampled = summary.silos_succeeded = static_cast<int>(parties_.size());
    summary.global_metrics = metrics.test;
    summary.round_seconds = Since(round_start);
    summary.elapsed_seconds = Since(start);
    FEDSILO_RETURN_IF_ERROR(Record(round, "train_loss", metrics.train_loss));
    for (const auto& [name, value] : metrics.test) {
      FEDSILO_RETURN_IF_ERROR(Record(round, absl::StrCat("test_", name), value));
    }
    FEDSILO_RETURN_IF_ERROR(
        Record(round, "silos_succeeded", static_cast<double>(summary.silos_succeeded)));
    if (options_.observer != nullptr) {
      FEDSILO_RETURN_IF_ERROR(options_.observer->OnRoundEnd(summary, ModelState(), rounds));
    }
    result.rounds_completed = round;
    result.final_metrics = std::move(metrics.test);
    result.round_seconds = Since(start);
    result.party_seconds = party_seconds_;
  }
  return result;
}

}  // namespace fedsilo::orchestrator
