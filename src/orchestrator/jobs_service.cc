#include "orchestrator/jobs_service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/file_seal.h"
#include "orchestrator/run_proto.h"
#include "orchestrator/run_views.h"
#include "transport/chunks.h"

namespace fedsilo::orchestrator {
namespace {

using transport::ToGrpcStatus;

double ToUnix(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

}  // namespace

StatusOr<std::string> JobsService::User(grpc::ServerContext* context, const char* call) const {
  StatusOr<secure::PeerIdentity> peer =
      auth_.Authenticate(*context, {secure::ParticipantKind::kUser});
  if (!peer.ok()) {
    spdlog::warn("refused {} from {}: {}", call, context->peer(),
                 std::string(peer.status().message()));
    return peer.status();
  }
  return peer->name;
}

grpc::Status JobsService::SubmitJob(grpc::ServerContext* context,
                                    const fedsilo::v1::SubmitJobRequest* request,
                                    fedsilo::v1::SubmitJobReply* reply) {
  StatusOr<std::string> user = User(context, "SubmitJob");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<JobRecord> job = manager_->Submit(*user, request->job_yaml(), request->torchscript());
  if (!job.ok()) return ToGrpcStatus(job.status());
  reply->set_job_id(job->id);
  return grpc::Status::OK;
}

grpc::Status JobsService::ListJobs(grpc::ServerContext* context,
                                   const fedsilo::v1::ListJobsRequest* /*request*/,
                                   fedsilo::v1::ListJobsReply* reply) {
  StatusOr<std::string> user = User(context, "ListJobs");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<std::vector<JobRecord>> jobs = manager_->store().ListJobs();
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  for (const JobRecord& j : *jobs) ToProto(j, reply->add_jobs());
  return grpc::Status::OK;
}

grpc::Status JobsService::GetJob(grpc::ServerContext* context,
                                 const fedsilo::v1::GetJobRequest* request,
                                 fedsilo::v1::JobStatus* reply) {
  StatusOr<std::string> user = User(context, "GetJob");
  if (!user.ok()) return ToGrpcStatus(user.status());
  JobStore& store = manager_->store();
  StatusOr<JobRecord> job = store.GetJob(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  ToProto(*job, reply->mutable_job());
  StatusOr<std::vector<RoundRecord>> rounds = store.Rounds(job->id);
  StatusOr<std::vector<MetricRow>> metrics = store.Metrics(job->id);
  if (!rounds.ok()) return ToGrpcStatus(rounds.status());
  if (!metrics.ok()) return ToGrpcStatus(metrics.status());
  for (const RoundRecord& r : *rounds) ToProto(r, reply->add_rounds());
  std::map<std::string, const MetricRow*> latest;
  std::map<std::string, int> taken_part;  // silo -> rounds it sent a valid update in
  for (const MetricRow& m : *metrics) {
    latest[m.name] = &m;
    if (m.source != "global" && m.name == m.source + "/num_examples") ++taken_part[m.source];
  }
  for (const auto& [name, m] : latest) {
    fedsilo::v1::MetricValue* v = reply->add_latest_metrics();
    v->set_name(name);
    v->set_round(m->round);
    v->set_value(m->value);
  }
  // The job's silos, in its order, with what the registry knows of them.
  StatusOr<JobConfig> config = ParseJobConfig(job->job_yaml, job->id);
  const std::vector<SiloStatus> known = manager_->Silos();
  if (config.ok()) {
    for (const std::string& name : config->federation.silos) {
      fedsilo::v1::SiloState* s = reply->add_silos();
      s->set_name(name);
      s->set_rounds_taken_part(taken_part[name]);
      for (const SiloStatus& k : known) {
        if (k.name != name) continue;
        s->set_connected(k.connected);
        s->set_last_seen_unix(ToUnix(k.last_seen));
        s->set_last_error(k.last_error);
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status JobsService::GetLogs(grpc::ServerContext* context,
                                  const fedsilo::v1::GetLogsRequest* request,
                                  fedsilo::v1::GetLogsReply* reply) {
  StatusOr<std::string> user = User(context, "GetLogs");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<JobRecord> job = manager_->store().GetJob(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  StatusOr<std::vector<EventRow>> events =
      manager_->store().Events(request->job_id(), request->after_seq());
  if (!events.ok()) return ToGrpcStatus(events.status());
  for (const EventRow& e : *events) {
    fedsilo::v1::LogEntry* entry = reply->add_entries();
    entry->set_seq(e.seq);
    entry->set_time_unix(e.time);
    entry->set_level(e.level);
    entry->set_message(e.message);
  }
  reply->set_state(std::string(JobStateName(job->state)));
  return grpc::Status::OK;
}

grpc::Status JobsService::AbortJob(grpc::ServerContext* context,
                                   const fedsilo::v1::AbortJobRequest* request,
                                   fedsilo::v1::JobInfo* reply) {
  StatusOr<std::string> user = User(context, "AbortJob");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<JobRecord> job = manager_->Abort(request->job_id(), *user, request->reason());
  if (!job.ok()) return ToGrpcStatus(job.status());
  ToProto(*job, reply);
  return grpc::Status::OK;
}

grpc::Status JobsService::DownloadModel(grpc::ServerContext* context,
                                        const fedsilo::v1::DownloadModelRequest* request,
                                        grpc::ServerWriter<fedsilo::v1::Chunk>* writer) {
  StatusOr<std::string> user = User(context, "DownloadModel");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<std::string> path = manager_->FinalModelPath(request->job_id(), *user);
  if (!path.ok()) {
    if (absl::IsPermissionDenied(path.status())) {
      spdlog::warn("refused DownloadModel of job '{}' to '{}' ({})", request->job_id(), *user,
                   context->peer());
    }
    return ToGrpcStatus(path.status());
  }
  std::ifstream in(*path, std::ios::binary);
  if (!in) {
    return ToGrpcStatus(absl::InternalError(absl::StrCat(*path, ": cannot read the final model")));
  }
  std::string magic(kSealedMagic.size(), '\0');
  in.read(magic.data(), static_cast<std::streamsize>(magic.size()));
  if (IsSealed(magic) || GetFileSealer() != nullptr) {
    // Encrypted at rest: decrypted (and authenticated) whole, then sent over
    // TLS. With a key ring, a plain file here is refused as any other.
    StatusOr<std::string> plain = ReadProtectedFile(*path);
    if (!plain.ok()) {
      spdlog::error("download of job '{}': {}", request->job_id(),
                    std::string(plain.status().message()));
      return ToGrpcStatus(absl::InternalError("the final model cannot be read; see the log"));
    }
    const bool sent = transport::ForEachChunk(
        *plain, [&](const fedsilo::v1::Chunk& c) { return writer->Write(c); });
    return sent ? grpc::Status::OK : grpc::Status(grpc::StatusCode::CANCELLED, "client left");
  }
  in.clear();
  in.seekg(0);
  // Streamed from the file: memory stays at one chunk whatever the model size.
  std::string buffer(transport::kChunkBytes, '\0');
  for (;;) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    fedsilo::v1::Chunk chunk;
    chunk.set_data(buffer.data(), static_cast<size_t>(n));
    chunk.set_last(!in);
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client left");
    if (!in) break;
  }
  if (in.bad()) {
    return ToGrpcStatus(absl::InternalError(absl::StrCat(*path, ": read error")));
  }
  return grpc::Status::OK;
}

grpc::Status JobsService::ListRuns(grpc::ServerContext* context,
                                   const fedsilo::v1::ListRunsRequest* request,
                                   fedsilo::v1::ListRunsReply* reply) {
  StatusOr<std::string> user = User(context, "ListRuns");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<std::vector<RunSummary>> runs =
      orchestrator::ListRuns(manager_->store(), request->experiment());
  if (!runs.ok()) return ToGrpcStatus(runs.status());
  for (const RunSummary& r : *runs) ToProto(r, reply->add_runs());
  return grpc::Status::OK;
}

grpc::Status JobsService::GetRun(grpc::ServerContext* context,
                                 const fedsilo::v1::GetRunRequest* request,
                                 fedsilo::v1::Run* reply) {
  StatusOr<std::string> user = User(context, "GetRun");
  if (!user.ok()) return ToGrpcStatus(user.status());
  StatusOr<RunData> run = FindAndLoadRun(manager_->store(), request->run());
  if (!run.ok()) return ToGrpcStatus(run.status());
  ToProto(*run, reply);
  return grpc::Status::OK;
}

}  // namespace fedsilo::orchestrator
