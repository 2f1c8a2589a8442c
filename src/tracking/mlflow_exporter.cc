#include "tracking/mlflow_exporter.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/mutex.h"
#include "core/unix_time.h"

namespace fedsilo::tracking {
StatusOr<std::unique_ptr<MlflowExporter>> MlflowExporter::Start(MlflowExportOptions options) {
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<MlflowClient> client,
                           MlflowClient::Create(options.uri));
  std::unique_ptr<MlflowExporter> exporter(
      new MlflowExporter(std::move(options), std::move(client)));
  return exporter;
}

MlflowExporter::MlflowExporter(MlflowExportOptions options, std::unique_ptr<MlflowClient> client)
    : options_(std::move(options)), client_(std::move(client)) {
  ops_.emplace_back(OpKind::kCreateRun);
  for (size_t i = 0; i < options_.params.size(); i += MlflowClient::kMaxBatchParams) {
    Op op(OpKind::kParams);
    const size_t end = std::min(options_.params.size(), i + MlflowClient::kMaxBatchParams);
    op.params.assign(options_.params.begin() + i, options_.params.begin() + end);
    ops_.push_back(std::move(op));
  }
  worker_ = std::thread([this] { Work(); });
}

MlflowExporter::~MlflowExporter() {
  bool finished;
  {
    MutexLock lock(&mu_);
    finished = finished_;
  }
  if (!finished) Finish("", std::chrono::milliseconds(0));
}

Status MlflowExporter::Record(const MetricRecord& record) {
  MutexLock lock(&mu_);
  if (!record.exportable) {
    ++report_.metrics_private;
    return absl::OkStatus();
  }
  // JSON has no NaN or infinity; MLflow would refuse the whole batch.
  if (disabled_ || finishing_ || !std::isfinite(record.value)) return absl::OkStatus();
  MlflowMetric m{record.name, record.value, static_cast<int64_t>(std::llround(record.time * 1000)),
                 record.round};
  if (ops_.empty() || ops_.back().kind != OpKind::kMetrics ||
      ops_.back().metrics.size() >= MlflowClient::kMaxBatchMetrics) {
    ops_.emplace_back(OpKind::kMetrics);
  }
  ops_.back().metrics.push_back(std::move(m));
  wake_.Signal();
  return absl::OkStatus();
}

void MlflowExporter::AddArtifact(std::string path, std::string bytes) {
  MutexLock lock(&mu_);
  if (disabled_ || finishing_) return;
  Op op(OpKind::kArtifact);
  op.path = std::move(path);
  op.bytes = std::move(bytes);
  ops_.push_back(std::move(op));
  wake_.Signal();
}

Status MlflowExporter::Execute(const Op& op) {
  switch (op.kind) {
    case OpKind::kCreateRun: {
      if (!options_.resume_run_id.empty()) {
        StatusOr<MlflowRun> run = client_->GetRun(options_.resume_run_id);
        if (run.ok()) {
          run_ = std::move(run).value();
          spdlog::info("MLflow: continuing run {} at {}", run_.run_id, client_->uri());
          return absl::OkStatus();
        }
        if (!absl::IsNotFound(run.status())) return run.status();
        spdlog::warn("MLflow: run {} is gone from {}; starting a new one",
                     options_.resume_run_id, client_->uri());
      }
      FEDSILO_ASSIGN_OR_RETURN(std::string experiment_id,
                               client_->GetOrCreateExperiment(options_.experiment));
      FEDSILO_ASSIGN_OR_RETURN(
          run_, client_->CreateRun(experiment_id, options_.run_name, UnixMillis(), options_.tags));
      spdlog::info("MLflow: run {} in experiment '{}' at {}", run_.run_id, options_.experiment,
                   client_->uri());
      if (options_.on_run_created) options_.on_run_created(run_.run_id);
      return absl::OkStatus();
    }
    case OpKind::kParams:
      return client_->LogBatch(run_.run_id, {}, op.params);
    case OpKind::kMetrics:
      return client_->LogBatch(run_.run_id, op.metrics, {});
    case OpKind::kArtifact:
      return client_->UploadArtifact(run_, op.path, op.bytes);
    case OpKind::kEnd:
      return client_->UpdateRun(run_.run_id, op.status, op.end_ms);
  }
  return absl::InternalError("unknown MLflow call");
}

void MlflowExporter::Work() {
  std::chrono::milliseconds backoff = options_.first_retry;
  int failures = 0;
  mu_.Lock();
  for (;;) {
    while (!give_up_ && ops_.empty()) wake_.Wait(&mu_);
    if (give_up_) break;
    if (ops_.front().kind == OpKind::kMetrics && !finishing_ &&
        ops_.front().metrics.size() < MlflowClient::kMaxBatchMetrics && failures == 0) {
      // A round's metrics come in a burst: send them together.
      const auto until = std::chrono::steady_clock::now() + options_.batch_delay;
      while (!give_up_ && !finishing_ && wake_.WaitUntil(&mu_, until)) {
      }
      if (give_up_) break;
    }
    Op op = std::move(ops_.front());
    ops_.pop_front();
    in_flight_ = true;
    mu_.Unlock();
    Status done = Execute(op);
    mu_.Lock();
    in_flight_ = false;
    if (done.ok()) {
      if (failures > 0) spdlog::info("MLflow at {} answers again", client_->uri());
      failures = 0;
      backoff = options_.first_retry;
      if (op.kind == OpKind::kMetrics) report_.metrics_sent += op.metrics.size();
    } else if (absl::IsUnavailable(done)) {
      ops_.push_front(std::move(op));
      ++failures;
      if (failures == 1 || failures % 10 == 0) {
        spdlog::warn("{}; trying again in {:.1f} s (training goes on; attempt {})",
                     std::string(done.message()), backoff.count() / 1000.0, failures);
      }
      const auto until = std::chrono::steady_clock::now() + backoff;
      while (!give_up_ && wake_.WaitUntil(&mu_, until)) {
      }
      backoff = std::min(backoff * 2, options_.max_retry);
      continue;
    } else {
      spdlog::error("{}", std::string(done.message()));
      report_.errors.push_back(std::string(done.message()));
      if (op.kind == OpKind::kCreateRun) {
        spdlog::error("MLflow: no run could be made; nothing of this run is exported");
        disabled_ = true;
        ops_.clear();
      }
    }
    if (ops_.empty()) idle_.SignalAll();
  }
  mu_.Unlock();
}

MlflowExportReport MlflowExporter::Finish(const std::string& status,
                                          std::chrono::milliseconds wait) {
  const auto start = std::chrono::steady_clock::now();
  {
    MutexLock lock(&mu_);
    if (finished_) return report_;
    finished_ = true;
    if (!status.empty() && !disabled_) {
      Op op(OpKind::kEnd);
      op.status = status;
      op.end_ms = UnixMillis();
      ops_.push_back(std::move(op));
    }
    finishing_ = true;
    wake_.SignalAll();
    while (!(ops_.empty() && !in_flight_) && idle_.WaitUntil(&mu_, start + wait)) {
    }
    give_up_ = true;
    wake_.SignalAll();
  }
  worker_.join();  // it needs the lock to see give_up_ and end
  MutexLock lock(&mu_);
  report_.run_id = run_.run_id;
  for (const Op& op : ops_) {
    if (op.kind == OpKind::kMetrics) {
      report_.metrics_unsent += op.metrics.size();
    } else {
      ++report_.calls_unsent;
    }
  }
  ops_.clear();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string kept_back =
      report_.metrics_private > 0
          ? absl::StrCat(", ", report_.metrics_private, " kept back by silo policies")
          : "";
  if (report_.complete()) {
    spdlog::info("MLflow: run {} at {}: {} metrics sent{}", report_.run_id, client_->uri(),
                 report_.metrics_sent, kept_back);
  } else if (report_.metrics_unsent > 0 || report_.calls_unsent > 0) {
    spdlog::warn(
        "MLflow export to {} incomplete after waiting {:.1f} s: {} metrics and {} other calls "
        "not sent ({} sent{}); the run store keeps every metric",
        client_->uri(), waited, report_.metrics_unsent, report_.calls_unsent,
        report_.metrics_sent, kept_back);
  } else {
    spdlog::warn("MLflow: run {} at {}: {} metrics sent, {} calls refused (see above)",
                 report_.run_id, client_->uri(), report_.metrics_sent, report_.errors.size());
  }
  return report_;
}

}  // namespace fedsilo::tracking
