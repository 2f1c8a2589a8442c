#include "orchestrator/orchestrator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <numeric>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/control_variates.h"
#include "core/kernels.h"
#include "core/mutex.h"
#include "core/score_histogram.h"
#include "core/thread_pool.h"
#include "core/unix_time.h"

namespace fedsilo::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Replies handed from worker threads to the orchestrator thread.
struct Arrival {
  size_t slot;
  StatusOr<transport::FitReply> reply;
};

template <typename Item>
class BlockingQueue {
 public:
  void Push(Item a) {
    // Notified under the lock: the consumer may destroy the queue as soon as
    // it has the last item, which it cannot take before the lock is released.
    MutexLock lock(&mu_);
    items_.push_back(std::move(a));
    cv_.Signal();
  }
  Item Pop() {
    MutexLock lock(&mu_);
    while (items_.empty()) cv_.Wait(&mu_);
    Item a = std::move(items_.front());
    items_.pop_front();
    return a;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::deque<Item> items_ ABSL_GUARDED_BY(mu_);
};
using ArrivalQueue = BlockingQueue<Arrival>;

}  // namespace

uint64_t MixSeed(uint64_t seed, uint64_t round, uint64_t index) {
  return SplitMix64(SplitMix64(SplitMix64(seed) ^ round) ^ index);
}

Orchestrator::Orchestrator(const JobConfig& job, OrchestratorOptions options,
                           std::vector<std::unique_ptr<transport::SiloConnection>> silos,
                           std::unique_ptr<strategy::Strategy> strategy, ModelEvaluator* evaluator,
                           tracking::MetricsSink* sink)
    : job_(job),
      options_(std::move(options)),
      silos_(std::move(silos)),
      strategy_(std::move(strategy)),
      evaluator_(evaluator),
      sink_(sink),
      pool_(std::max(1, options_.threads)) {
  if (job_.privacy.dp.mode == DpMode::kCentral) {
    const size_t sampled = SampleSilos(1).size();
    const double rate =
        silos_.empty() ? 1.0 : static_cast<double>(sampled) / static_cast<double>(silos_.size());
    central_dp_ =
        std::make_unique<privacy::CentralDp>(job_.privacy.dp, static_cast<int>(sampled), rate);
  }
}

std::vector<size_t> Orchestrator::SampleSilos(int round) const {
  const size_t n = silos_.size();
  std::vector<size_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  if (job_.federation.fraction >= 1.0) return all;
  const size_t k = std::min(n, static_cast<size_t>(SilosPerRound(job_.federation)));
  std::mt19937_64 rng(MixSeed(job_.seed, static_cast<uint64_t>(round), 0x5a3f1e));
  for (size_t i = 0; i < k; ++i) {
    std::uniform_int_distribution<size_t> pick(i, n - 1);
    std::swap(all[i], all[pick(rng)]);
  }
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

void Orchestrator::Audit(absl::string_view event, std::map<std::string, std::string> data) const {
  if (options_.audit == nullptr) return;
  data["job"] = options_.run_id;
  options_.audit->Record(event, data);
}

Status Orchestrator::RecordMetric(int round, const std::string& source, const std::string& metric,
                                  double value, bool exportable) {
  if (sink_ == nullptr) return absl::OkStatus();
  MutexLock lock(&pending_mu_);
  pending_.push_back(
      {round, source, absl::StrCat(source, "/", metric), value, UnixNow(), exportable});
  return absl::OkStatus();
}

Status Orchestrator::FlushMetrics(bool keep) {
  std::vector<tracking::MetricRecord> records;
  {
    MutexLock lock(&pending_mu_);
    records.swap(pending_);
  }
  if (!keep || sink_ == nullptr) return absl::OkStatus();
  for (const tracking::MetricRecord& r : records) FEDSILO_RETURN_IF_ERROR(sink_->Record(r));
  return absl::OkStatus();
}

bool Orchestrator::RetryRound(int round, int attempt, const Status& failure) {
  const bool transient = absl::IsUnavailable(failure) || absl::IsDeadlineExceeded(failure);
  // SCAFFOLD's silos have already moved their control variates; under local
  // DP each attempt is charged to the silos' budgets, past the run's plan.
  if (!transient || aggregated_ || attempt > job_.federation.round_retries ||
      TraitsOf(job_.strategy).control_variates || job_.privacy.dp.mode == DpMode::kLocal) {
    return false;
  }
  spdlog::warn("round {} failed ({}); running it again (retry {} of {}) once its silos are back",
               round, std::string(failure.message()), attempt, job_.federation.round_retries);
  Audit("round_retried", {{"round", std::to_string(round)},
                          {"attempt", std::to_string(attempt + 1)},
                          {"reason", std::string(failure.message())}});
  const auto deadline = Clock::now() + std::chrono::seconds(job_.federation.wait_for_silos);
  const std::vector<size_t> sampled = SampleSilos(round);
  while (true) {
    if (options_.stop != nullptr && options_.stop->load()) return false;
    std::vector<std::string> missing;
    for (size_t index : sampled) {
      if (!silos_[index]->Reachable()) missing.push_back(silos_[index]->silo_name());
    }
    if (missing.empty()) break;
    if (Clock::now() >= deadline) {
      spdlog::warn("round {}: {} did not come back within {} s (federation.wait_for_silos)", round,
                   absl::StrJoin(missing, ", "), job_.federation.wait_for_silos);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // A silo that reconnects needs a moment to be told of the round's end.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  return true;
}

Status Orchestrator::AcceptUpdate(int round, const std::string& silo,
                                  StatusOr<transport::FitReply> reply, const ModelState& global,
                                  transport::UpdateSource* following, RoundSummary& summary) {
  Status accepted = reply.status();
  if (accepted.ok() && reply->source != nullptr) {
    // Remote silos keep their update until it is its turn to be folded.
    StatusOr<ModelState> fetched = reply->source->Fetch();
    reply->source.reset();
    // At most two updates are in the orchestrator: this one, and the
    // following one, on its way while this one is checked and folded.
    if (following != nullptr) following->Prefetch();
    if (fetched.ok()) {
      reply->update = std::move(fetched).value();
    } else {
      accepted = fetched.status();
    }
  }
  if (accepted.ok()) accepted = Annotate(reply->update.CheckSameLayout(global), "update rejected");
  if (accepted.ok()) accepted = Annotate(reply->update.CheckFinite(), "update rejected");
  if (accepted.ok() && reply->num_examples <= 0) {
    accepted = absl::InvalidArgumentError(
        absl::StrCat("update rejected: num_examples is ", reply->num_examples));
  }
  if (accepted.ok()) {
    const bool exportable = !reply->metrics_private;
    for (const auto& [metric, value] : reply->metrics) {
      FEDSILO_RETURN_IF_ERROR(RecordMetric(round, silo, metric, value, exportable));
    }
    FEDSILO_RETURN_IF_ERROR(RecordMetric(round, silo, "num_examples",
                                         static_cast<double>(reply->num_examples), exportable));
    if (options_.audit != nullptr) {
      Audit("update_received", {{"round", std::to_string(round)},
                                {"silo", silo},
                                {"update", secure::ModelDigest(reply->update)},
                                {"examples", std::to_string(reply->num_examples)}});
    }
    if (job_.strategy.max_update_norm > 0) {
      // The model update only: SCAFFOLD's Δc ("control/") is left as sent.
      ClipL2Norm(reply->update, job_.strategy.max_update_norm, kControlPrefix);
    }
    double weight = static_cast<double>(reply->num_examples);
    if (central_dp_ != nullptr) {
      // Silo-level DP: bounded, equally weighted contributions.
      central_dp_->Clip(reply->update);
      weight = 1.0;
    }
    accepted = strategy_->Accumulate(std::move(reply->update), weight);
    strategy_->TakeFolded();  // dropped: memory stays O(model)
  }
  if (accepted.ok()) {
    ++summary.silos_succeeded;
  } else {
    spdlog::warn("round {}: silo '{}' dropped: {}", round, silo, std::string(accepted.message()));
    summary.failures.push_back(absl::StrCat(silo, ": ", accepted.message()));
    Audit("silo_dropped", {{"round", std::to_string(round)},
                           {"silo", silo},
                           {"reason", std::string(accepted.message())}});
  }
  return absl::OkStatus();
}

Status Orchestrator::AcceptTrained(int round, const std::string& silo,
                                   StatusOr<transport::FitReply> reply, RoundSummary& summary,
                                   std::vector<std::string>& trained) {
  if (!reply.ok()) {
    spdlog::warn("round {}: silo '{}' dropped: {}", round, silo,
                 std::string(reply.status().message()));
    summary.failures.push_back(absl::StrCat(silo, ": ", reply.status().message()));
    Audit("silo_dropped", {{"round", std::to_string(round)},
                           {"silo", silo},
                           {"reason", std::string(reply.status().message())}});
    return absl::OkStatus();
  }
  Audit("trained", {{"round", std::to_string(round)}, {"silo", silo}});
  reply->source.reset();  // nothing to fetch: the update stays at the silo, to be masked
  for (const auto& [metric, value] : reply->metrics) {
    FEDSILO_RETURN_IF_ERROR(RecordMetric(round, silo, metric, value, !reply->metrics_private));
  }
  trained.push_back(silo);
  return absl::OkStatus();
}

Status Orchestrator::RunSecureStage(int round, const std::string& stage,
                                    const std::map<std::string, std::string>& requests,
                                    const SecureAccept& accept, RoundSummary& summary) {
  struct Reply {
    std::string silo;
    StatusOr<std::string> payload;
  };
  BlockingQueue<Reply> replies;
  for (const auto& [silo, payload] : requests) {
    transport::SiloConnection* connection = nullptr;
    for (const auto& c : silos_) {
      if (c->silo_name() == silo) connection = c.get();
    }
    transport::SecureStepRequest request{options_.run_id, round, payload};
    pool_.Schedule([&replies, connection, request = std::move(request), silo = silo] {
      replies.Push({silo, connection->SecureStep(request)});
    });
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    Reply r = replies.Pop();
    Status accepted = r.payload.status();
    if (accepted.ok()) {
      if (options_.audit != nullptr) {  // a masked input's digest costs a pass over it
        Audit("secure_reply", {{"round", std::to_string(round)},
                               {"silo", r.silo},
                               {"stage", stage},
                               {"reply", secure::BytesDigest(*r.payload)}});
      }
      accepted = accept(r.silo, *r.payload);
    }
    if (!accepted.ok()) {
      spdlog::warn("round {}: silo '{}' dropped from secure aggregation: {}", round, r.silo,
                   std::string(accepted.message()));
      summary.failures.push_back(absl::StrCat(r.silo, ": ", accepted.message()));
      Audit("silo_dropped", {{"round", std::to_string(round)},
                             {"silo", r.silo},
                             {"stage", stage},
                             {"reason", std::string(accepted.message())}});
    }
  }
  return absl::OkStatus();
}

Status Orchestrator::SecureAggregate(int round, const ModelState& global, int sampled,
                                     const std::vector<std::string>& trained,
                                     RoundSummary& summary) {
  const SecureAggregationConfig& config = job_.privacy.secure_aggregation;
  secure::SecAggParams params;
  params.threshold = secure::SecAggThreshold(config.threshold, sampled, job_.federation.min_silos);
  params.clip_range = config.clip_range;
  params.bits = config.bits;
  // Central DP weighs silos equally, with updates clipped by the silos.
  params.max_weight = central_dp_ != nullptr ? 0 : config.max_weight;
  params.clip_norm = central_dp_ != nullptr ? central_dp_->clip_norm() : 0;
  if (job_.strategy.max_update_norm > 0) {
    // The norm bound is applied by the silos, before masking.
    params.clip_norm = params.clip_norm > 0
                           ? std::min(params.clip_norm, job_.strategy.max_update_norm)
                           : job_.strategy.max_update_norm;
  }
  if (trained.size() < static_cast<size_t>(params.threshold)) {
    return absl::UnavailableError(
        absl::StrCat("round ", round, ": only ", trained.size(), " of ", sampled,
                     " sampled silos trained, below the secure-aggregation threshold of ",
                     params.threshold, ": ", absl::StrJoin(summary.failures, "; ")));
  }
  FEDSILO_ASSIGN_OR_RETURN(
      secure::SecAggRound secagg,
      secure::SecAggRound::Create(options_.run_id, round, params, trained, global));
  if (!options_.federation_ca_pem.empty()) {
    if (signature_checker_ == nullptr) {
      FEDSILO_ASSIGN_OR_RETURN(signature_checker_,
                               secure::SignatureChecker::Create(options_.federation_ca_pem));
    }
    secagg.RequireSignatures(signature_checker_);
  }
  auto fail = [&](const Status& s) { return Annotate(s, absl::StrCat("round ", round)); };
  // The same request for every silo of the current stage.
  auto to_all = [&](const std::string& request) {
    std::map<std::string, std::string> requests;
    for (const std::string& s : secagg.silos()) requests[s] = request;
    return requests;
  };
  FEDSILO_RETURN_IF_ERROR(RunSecureStage(
      round, "advertise", to_all(secagg.AdvertiseRequest()),
      [&](const std::string& s, absl::string_view r) { return secagg.AcceptAdvertise(s, r); },
      summary));
  StatusOr<std::string> share_keys = secagg.ShareKeysRequest();
  if (!share_keys.ok()) return fail(share_keys.status());
  FEDSILO_RETURN_IF_ERROR(RunSecureStage(
      round, "share_keys", to_all(*share_keys),
      [&](const std::string& s, absl::string_view r) { return secagg.AcceptShareKeys(s, r); },
      summary));
  StatusOr<std::map<std::string, std::string>> masked = secagg.MaskedInputRequests();
  if (!masked.ok()) return fail(masked.status());
  FEDSILO_RETURN_IF_ERROR(RunSecureStage(
      round, "masked_input", *masked,
      [&](const std::string& s, absl::string_view r) { return secagg.AcceptMaskedInput(s, r); },
      summary));
  masked->clear();
  StatusOr<std::string> consistency = secagg.ConsistencyRequest();
  if (!consistency.ok()) return fail(consistency.status());
  FEDSILO_RETURN_IF_ERROR(RunSecureStage(
      round, "consistency", to_all(*consistency),
      [&](const std::string& s, absl::string_view r) { return secagg.AcceptConsistency(s, r); },
      summary));
  StatusOr<std::string> unmask = secagg.UnmaskRequest();
  if (!unmask.ok()) return fail(unmask.status());
  FEDSILO_RETURN_IF_ERROR(RunSecureStage(
      round, "unmask", to_all(*unmask),
      [&](const std::string& s, absl::string_view r) { return secagg.AcceptUnmask(s, r); },
      summary));
  StatusOr<secure::SecAggOutcome> outcome = secagg.Finish();
  if (!outcome.ok()) return fail(outcome.status());

  summary.silos_succeeded = outcome->contributors;
  if (central_dp_ != nullptr) {
    central_dp_->CountClipped(outcome->within_clip_norm, outcome->contributors);
  }
  FEDSILO_RETURN_IF_ERROR(
      RecordMetric(round, "global", "secagg_quantization_error", outcome->quantization_error));
  FEDSILO_RETURN_IF_ERROR(RecordMetric(round, "global", "secagg_clipped_values",
                                       static_cast<double>(outcome->clipped_values)));
  // The weighted mean is the only update this round has.
  FEDSILO_RETURN_IF_ERROR(strategy_->Accumulate(std::move(outcome->mean), 1.0));
  strategy_->TakeFolded();
  return absl::OkStatus();
}

transport::TaskRequest Orchestrator::Request(transport::TaskPayload task, int round,
                                             size_t silo) const {
  transport::TaskRequest r;
  r.run_id = options_.run_id;
  r.round = round;
  r.seed = MixSeed(job_.seed, static_cast<uint64_t>(round), silo + 1);
  r.job = &job_;
  r.task = task;
  if (!options_.torchscript.empty()) r.torchscript = &options_.torchscript;
  return r;
}

std::vector<StatusOr<transport::FitReply>> Orchestrator::AskAll(const transport::TaskPayload& task,
                                                                int round) {
  std::vector<transport::TaskRequest> requests(silos_.size());
  ArrivalQueue arrivals;
  for (size_t i = 0; i < silos_.size(); ++i) {
    transport::TaskRequest& r = requests[i];
    r = Request(task, round, i);
    transport::SiloConnection* silo = silos_[i].get();
    pool_.Schedule([&arrivals, &r, silo, i] { arrivals.Push({i, silo->RunTask(r)}); });
  }
  std::vector<StatusOr<transport::FitReply>> replies(silos_.size(), absl::UnknownError("no reply"));
  for (size_t received = 0; received < silos_.size(); ++received) {
    Arrival a = arrivals.Pop();
    replies[a.slot] = std::move(a.reply);
  }
  // These replies are small (sums, a score histogram): fetch them all.
  for (StatusOr<transport::FitReply>& reply : replies) {
    if (!reply.ok() || reply->source == nullptr) continue;
    StatusOr<ModelState> fetched = reply->source->Fetch();
    reply->source.reset();
    if (fetched.ok()) {
      reply->update = std::move(fetched).value();
    } else {
      reply = fetched.status();
    }
  }
  return replies;
}

StatusOr<FeatureStatistics> Orchestrator::ComputeStatistics() {
  if (silos_.empty()) return absl::InvalidArgumentError("federation.silos: no silos");
  std::vector<StatusOr<transport::FitReply>> replies = AskAll(transport::StatisticsTask{}, 0);
  std::optional<FeatureSums> total;
  std::vector<std::string> failures, invalid;
  std::vector<std::pair<std::string, transport::StatisticsAnswer>> answered;
  for (size_t i = 0; i < silos_.size(); ++i) {
    const std::string& silo = silos_[i]->silo_name();
    StatusOr<transport::StatisticsAnswer> answer =
        replies[i].ok() ? transport::DecodeStatisticsAnswer(*replies[i], silo)
                        : StatusOr<transport::StatisticsAnswer>(replies[i].status());
    if (!answer.ok()) {
      spdlog::warn("statistics: silo '{}' left out: {}", silo,
                   std::string(answer.status().message()));
      failures.push_back(absl::StrCat(silo, ": ", answer.status().message()));
      if (absl::IsInvalidArgument(answer.status()) || absl::IsNotFound(answer.status())) {
        invalid.push_back(silo);
      }
      continue;
    }
    if (!total.has_value()) {
      total = answer->sums;
    } else if (Status added = total->Add(answer->sums); !added.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("statistics: silo '", silo, "': ", added.message()));
    }
    answered.emplace_back(silo, std::move(answer).value());
  }
  if (static_cast<int>(answered.size()) < job_.federation.min_silos) {
    // Every silo refusing its data for the same kind of reason (a bad file,
    // a column the job names wrongly) is invalid input, not an outage.
    const bool all_invalid = !invalid.empty() && invalid.size() == failures.size();
    return absl::Status(
        all_invalid ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kUnavailable,
        absl::StrCat("statistics: only ", answered.size(), " of ", silos_.size(),
                     " silos answered (federation.min_silos is ", job_.federation.min_silos,
                     "): ", absl::StrJoin(failures, "; ")));
  }
  FeatureStatistics st = total->Finish();
  if (job_.preprocess.scale == ScaleKind::kMinMax && !st.has_min_max()) {
    return absl::FailedPreconditionError(
        "preprocess.scale: minmax needs the features' minima and maxima, and a silo withheld "
        "them (its policy's statistics.share_min_max); use scale: standard");
  }
  job_.preprocess.statistics = st;
  for (const auto& [silo, answer] : answered) {
    FEDSILO_RETURN_IF_ERROR(RecordMetric(0, silo, "rows", static_cast<double>(answer.sums.rows()),
                                         !answer.metrics_private));
  }
  FEDSILO_RETURN_IF_ERROR(RecordMetric(0, "global", "rows", static_cast<double>(st.rows)));
  for (size_t c = 0; c < st.class_counts.size(); ++c) {
    FEDSILO_RETURN_IF_ERROR(RecordMetric(0, "global", absl::StrCat("class_", c, "_rows"),
                                         static_cast<double>(st.class_counts[c])));
  }
  Audit("statistics", {{"silos", std::to_string(answered.size())},
                       {"rows", std::to_string(st.rows)},
                       {"features", std::to_string(st.features.size())}});
  FEDSILO_RETURN_IF_ERROR(FlushMetrics(true));
  return st;
}

StatusOr<std::map<std::string, double>> Orchestrator::EvaluateOnSilos(int round,
                                                                      const ModelState& global) {
  std::vector<StatusOr<transport::FitReply>> replies =
      AskAll(transport::EvaluateTask{&global}, round);
  double examples = 0, loss = 0, accuracy = 0, auc = 0;
  double tp = 0, fp = 0, fn = 0;
  bool binary = true, pooled_auc = true;
  ScoreHistogram scores;  // every silo's, added
  int evaluated = 0;
  std::vector<std::string> failures;
  for (size_t i = 0; i < silos_.size(); ++i) {
    const std::string& silo = silos_[i]->silo_name();
    StatusOr<transport::EvaluateAnswer> answer =
        replies[i].ok() ? transport::DecodeEvaluateAnswer(*replies[i], silo)
                        : StatusOr<transport::EvaluateAnswer>(replies[i].status());
    if (!answer.ok()) {
      spdlog::warn("round {}: silo '{}' did not evaluate the global model: {}", round, silo,
                   std::string(answer.status().message()));
      failures.push_back(absl::StrCat(silo, ": ", answer.status().message()));
      continue;
    }
    const double n = static_cast<double>(answer->examples);
    examples += n;
    loss += n * answer->loss;
    accuracy += n * answer->accuracy;
    std::vector<std::pair<const char*, double>> recorded = {{"loss", answer->loss},
                                                            {"accuracy", answer->accuracy}};
    if (answer->binary.has_value()) {
      const transport::BinaryEvaluation& b = *answer->binary;
      auc += n * b.auc;
      tp += static_cast<double>(b.true_positives);
      fp += static_cast<double>(b.false_positives);
      fn += static_cast<double>(b.false_negatives);
      if (b.scores.has_value()) {
        scores.Merge(*b.scores);
      } else {
        pooled_auc = false;
      }
      recorded.insert(recorded.end(),
                      {{"precision", b.precision}, {"recall", b.recall}, {"auc", b.auc}});
    } else {
      binary = false;
    }
    ++evaluated;
    for (const auto& [name, value] : recorded) {
      FEDSILO_RETURN_IF_ERROR(RecordMetric(round, silo, absl::StrCat("global_test_", name), value,
                                           !answer->metrics_private));
    }
  }
  if (evaluated == 0) {
    return absl::UnavailableError(absl::StrCat(
        "round ", round, ": no silo evaluated the global model: ", absl::StrJoin(failures, "; ")));
  }
  std::map<std::string, double> m = {{"loss", loss / examples}, {"accuracy", accuracy / examples}};
  if (binary) {
    m["precision"] = tp + fp > 0 ? tp / (tp + fp) : 0.0;
    m["recall"] = tp + fn > 0 ? tp / (tp + fn) : 0.0;
    m["auc"] = pooled_auc ? scores.Auc() : auc / examples;
  }
  return m;
}

StatusOr<RoundSummary> Orchestrator::RunRound(int round, ModelState& global) {
  const Clock::time_point start = Clock::now();
  const std::vector<size_t> sampled = SampleSilos(round);
  RoundSummary summary;
  summary.round = round;
  summary.silos_sampled = static_cast<int>(sampled.size());
  FEDSILO_RETURN_IF_ERROR(strategy_->BeginRound(global));
  if (central_dp_ != nullptr) central_dp_->BeginRound();
  // What the silos receive: the global model, plus what the strategy sends
  // along (SCAFFOLD's control variate).
  ModelState broadcast;
  const ModelState* sent = &global;
  if (strategy_->ExtendsBroadcast()) {
    broadcast = strategy_->Broadcast(global);
    sent = &broadcast;
  }
  if (options_.audit != nullptr) {
    const std::string digest = secure::ModelDigest(*sent);
    for (size_t index : sampled) {
      Audit("model_sent", {{"round", std::to_string(round)},
                           {"silo", silos_[index]->silo_name()},
                           {"model", digest}});
    }
  }
  std::vector<transport::TaskRequest> requests(sampled.size());
  ArrivalQueue arrivals;
  for (size_t slot = 0; slot < sampled.size(); ++slot) {
    transport::TaskRequest& r = requests[slot];
    r = Request(transport::FitTask{sent}, round, sampled[slot]);
    transport::SiloConnection* silo = silos_[sampled[slot]].get();
    pool_.Schedule([&arrivals, &r, silo, slot] { arrivals.Push({slot, silo->RunTask(r)}); });
  }

  // Fold in sampling order while later silos are still training. Every reply
  // is received, even after a fatal error, because the workers use `requests`
  // and `arrivals` until they have pushed their reply.
  const bool secure = job_.privacy.secure_aggregation.enabled;
  std::vector<std::string> trained;  // with secure aggregation: silos that trained
  std::vector<std::optional<StatusOr<transport::FitReply>>> waiting(sampled.size());
  size_t next = 0;
  Status fatal;
  for (size_t received = 0; received < sampled.size(); ++received) {
    Arrival a = arrivals.Pop();
    waiting[a.slot] = std::move(a.reply);
    for (; next < sampled.size() && waiting[next].has_value(); ++next) {
      StatusOr<transport::FitReply> reply = std::move(*waiting[next]);
      waiting[next].reset();
      // The next update travels while this one is checked and folded.
      transport::UpdateSource* following = nullptr;
      if (!secure && next + 1 < sampled.size() && waiting[next + 1].has_value() &&
          waiting[next + 1]->ok()) {
        following = (*waiting[next + 1])->source.get();
      }
      const std::string& silo = silos_[sampled[next]]->silo_name();
      if (fatal.ok() && secure) {
        fatal = AcceptTrained(round, silo, std::move(reply), summary, trained);
      } else if (fatal.ok()) {
        fatal = AcceptUpdate(round, silo, std::move(reply), *sent, following, summary);
      }
    }
  }
  FEDSILO_RETURN_IF_ERROR(fatal);
  if (secure) {
    FEDSILO_RETURN_IF_ERROR(
        SecureAggregate(round, global, static_cast<int>(sampled.size()), trained, summary));
  }

  if (summary.silos_succeeded < job_.federation.min_silos) {
    return absl::UnavailableError(absl::StrCat(
        "round ", round, ": only ", summary.silos_succeeded, " of ", summary.silos_sampled,
        " sampled silos returned a valid update (federation.min_silos is ",
        job_.federation.min_silos, "): ", absl::StrJoin(summary.failures, "; ")));
  }
  aggregated_ = true;
  FEDSILO_ASSIGN_OR_RETURN(global, strategy_->Finish());
  strategy_->TakeFolded();
  if (central_dp_ != nullptr) {
    // The noise of the mean, scaled like the mean by the server learning rate.
    ModelState noise = global.ZerosLike();
    const double clip_norm = central_dp_->clip_norm();
    central_dp_->Noise(noise, summary.silos_succeeded);
    const float lr = static_cast<float>(job_.strategy.server_learning_rate);
    for (size_t t = 0; t < global.size(); ++t) {
      kernels::Axpy(lr, noise.tensors()[t].floats(), global.mutable_tensors()[t].floats());
    }
    FEDSILO_ASSIGN_OR_RETURN(double epsilon, central_dp_->Epsilon(round));
    FEDSILO_RETURN_IF_ERROR(RecordMetric(round, "global", "epsilon", epsilon));
    FEDSILO_RETURN_IF_ERROR(RecordMetric(round, "global", "clip_norm", clip_norm));
  }
  if (options_.audit != nullptr) {
    Audit("aggregate", {{"round", std::to_string(round)},
                        {"model", secure::ModelDigest(global)},
                        {"silos", std::to_string(summary.silos_succeeded)},
                        {"secure", job_.privacy.secure_aggregation.enabled ? "true" : "false"}});
  }
  if (evaluator_ != nullptr) {
    FEDSILO_ASSIGN_OR_RETURN(summary.global_metrics, evaluator_->Evaluate(global));
  } else {
    FEDSILO_ASSIGN_OR_RETURN(summary.global_metrics, EvaluateOnSilos(round, global));
  }
  for (const auto& [metric, value] : summary.global_metrics) {
    FEDSILO_RETURN_IF_ERROR(RecordMetric(round, "global", absl::StrCat("test_", metric), value));
  }
  FEDSILO_RETURN_IF_ERROR(
      RecordMetric(round, "global", "silos_succeeded", summary.silos_succeeded));
  summary.strategy_state = strategy_->State();
  summary.round_seconds = SecondsSince(start);
  return summary;
}

StatusOr<RunResult> Orchestrator::Run(ModelState initial, RoundObserver* observer,
                                      int first_round) {
  if (silos_.empty()) return absl::InvalidArgumentError("federation.silos: no silos");
  if (central_dp_ != nullptr) FEDSILO_RETURN_IF_ERROR(central_dp_->Check());
  const Clock::time_point start = Clock::now();
  RunResult result;
  result.final_model = std::move(initial);
  result.rounds_completed = first_round - 1;
  for (int round = first_round; round <= job_.training.rounds; ++round) {
    if (options_.stop != nullptr && options_.stop->load()) {
      return absl::CancelledError(absl::StrCat("stopped before round ", round));
    }
    StatusOr<RoundSummary> ran = absl::UnknownError("not run");
    for (int attempt = 1;; ++attempt) {
      ModelState global = result.final_model;  // kept as it was if the round fails
      aggregated_ = false;
      ran = RunRound(round, global);
      FEDSILO_RETURN_IF_ERROR(FlushMetrics(ran.ok()));
      if (ran.ok()) {
        result.final_model = std::move(global);
        break;
      }
      if (!RetryRound(round, attempt, ran.status())) break;
    }
    if (!ran.ok()) {
      Audit("round_failed",
            {{"round", std::to_string(round)}, {"reason", std::string(ran.status().message())}});
      return ran.status();
    }
    RoundSummary summary = std::move(ran).value();
    summary.elapsed_seconds = SecondsSince(start);
    result.rounds_completed = round;
    result.final_metrics = summary.global_metrics;
    if (observer != nullptr) {
      FEDSILO_RETURN_IF_ERROR(
          observer->OnRoundEnd(summary, result.final_model, job_.training.rounds));
    }
  }
  return result;
}

}  // namespace fedsilo::orchestrator
