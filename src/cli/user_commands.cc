#include "cli/user_commands.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/format.h"
#include "cli/jobs_client.h"
#include "core/file_util.h"
#include "core/job_config.h"
#include "core/job_schema.h"
#include "core/model_state_file.h"
#include "fedsilo/v1/jobs.grpc.pb.h"
#include "transport/chunks.h"

namespace fedsilo::cli {
namespace {

nlohmann::json InfoJson(const fedsilo::v1::JobInfo& j) {
  return {{"id", j.id()},
          {"name", j.name()},
          {"owner", j.owner()},
          {"state", j.state()},
          {"rounds_total", j.rounds_total()},
          {"rounds_completed", j.rounds_completed()},
          {"created", j.created_unix()},
          {"started", j.started_unix()},
          {"finished", j.finished_unix()},
          {"error", j.error()},
          {"run_id", j.run_id()}};
}

bool Finished(const std::string& state) {
  return state == "done" || state == "failed" || state == "aborted";
}

}  // namespace

Status SubmitCommand(const UserOptions& options, const JobConfig& job) {
  FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options));
  fedsilo::v1::SubmitJobRequest request;
  // In the oldest schema that carries it: an orchestrator of an older
  // release reads a job that sets none of the newer keys.
  request.set_job_yaml(JobConfigToStableYaml(job));
  if (job.model.kind == ModelKind::kTorchScript) {
    // The module goes with the job; the orchestrator ships it to the silos.
    FEDSILO_ASSIGN_OR_RETURN(std::string module, ReadFile(job.model.torchscript));
    if (module.size() > transport::kMaxTorchScriptBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.torchscript ", job.model.torchscript, ": ", module.size() >> 20,
          " MiB; a job's module may have at most ", transport::kMaxTorchScriptBytes >> 20, " MiB"));
    }
    request.set_torchscript(std::move(module));
  }
  fedsilo::v1::SubmitJobReply reply;
  auto context = client.Context();
  FEDSILO_RETURN_IF_ERROR(
      client.Check(client.stub().SubmitJob(context.get(), request, &reply), "SubmitJob"));
  if (options.json) {
    std::printf("%s\n", nlohmann::json({{"job_id", reply.job_id()}}).dump().c_str());
  } else {
    std::printf("%s\n", reply.job_id().c_str());
    std::fprintf(stderr, "queued %s (%s); follow it with: fedsilo status %s --kit %s\n",
                 reply.job_id().c_str(), job.name.c_str(), reply.job_id().c_str(),
                 options.kit_dir.c_str());
  }
  return absl::OkStatus();
}

Status JobsCommand(const UserOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options));
  fedsilo::v1::ListJobsReply reply;
  auto context = client.Context();
  FEDSILO_RETURN_IF_ERROR(
      client.Check(client.stub().ListJobs(context.get(), {}, &reply), "ListJobs"));
  if (options.json) {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& j : reply.jobs()) all.push_back(InfoJson(j));
    std::printf("%s\n", nlohmann::json({{"jobs", all}}).dump().c_str());
    return absl::OkStatus();
  }
  if (reply.jobs().empty()) {
    std::printf("no jobs yet\n");
    return absl::OkStatus();
  }
  std::printf("%-10s %-8s %-7s %-12s %-19s %s\n", "ID", "STATE", "ROUNDS", "OWNER", "SUBMITTED",
              "NAME");
  for (const auto& j : reply.jobs()) {
    std::printf("%-10s %-8s %3d/%-3d %-12s %-19s %s\n", j.id().c_str(), j.state().c_str(),
                j.rounds_completed(), j.rounds_total(), j.owner().c_str(),
                FormatTime(j.created_unix()).c_str(), j.name().c_str());
  }
  return absl::OkStatus();
}

Status StatusCommand(const UserOptions& options, const std::string& job_id, bool wait) {
  FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options));
  fedsilo::v1::GetJobRequest request;
  request.set_job_id(job_id);
  fedsilo::v1::JobStatus status;
  int last_printed = -1;
  for (;;) {
    auto context = client.Context();
    FEDSILO_RETURN_IF_ERROR(
        client.Check(client.stub().GetJob(context.get(), request, &status), "GetJob"));
    if (!wait || Finished(status.job().state())) break;
    if (!options.json && status.job().rounds_completed() != last_printed) {
      last_printed = status.job().rounds_completed();
      std::fprintf(stderr, "%s: %s, round %d/%d\n", job_id.c_str(), status.job().state().c_str(),
                   status.job().rounds_completed(), status.job().rounds_total());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const fedsilo::v1::JobInfo& j = status.job();
  if (options.json) {
    nlohmann::json out = InfoJson(j);
    nlohmann::json silos = nlohmann::json::array();
    for (const auto& s : status.silos()) {
      silos.push_back({{"name", s.name()},
                       {"connected", s.connected()},
                       {"last_seen", s.last_seen_unix()},
                       {"rounds_taken_part", s.rounds_taken_part()},
                       {"last_error", s.last_error()}});
    }
    nlohmann::json metrics = nlohmann::json::object();
    for (const auto& m : status.latest_metrics()) metrics[m.name()] = m.value();
    nlohmann::json rounds = nlohmann::json::array();
    for (const auto& r : status.rounds()) {
      rounds.push_back(
          {{"round", r.round()},
           {"seconds", r.seconds()},
           {"finished", r.finished_unix()},
           {"silos_sampled", r.silos_sampled()},
           {"silos_succeeded", r.silos_succeeded()},
           {"failures", std::vector<std::string>(r.failures().begin(), r.failures().end())}});
    }
    out["rounds"] = rounds;
    out["silos"] = silos;
    out["latest_metrics"] = metrics;
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s  %s  (%s, owner %s)\n", j.id().c_str(), j.state().c_str(), j.name().c_str(),
                j.owner().c_str());
    std::printf("  rounds     %d of %d done\n", j.rounds_completed(), j.rounds_total());
    std::printf("  submitted  %s   started %s   finished %s\n",
                FormatTime(j.created_unix()).c_str(), FormatTime(j.started_unix()).c_str(),
                FormatTime(j.finished_unix()).c_str());
    if (!j.error().empty()) std::printf("  error      %s\n", j.error().c_str());
    std::printf("  silos\n");
    for (const auto& s : status.silos()) {
      std::printf("    %-16s %-12s rounds taken part %-4d last seen %s%s%s\n", s.name().c_str(),
                  s.connected() ? "connected" : "disconnected", s.rounds_taken_part(),
                  FormatTime(s.last_seen_unix()).c_str(), s.last_error().empty() ? "" : "  ",
                  s.last_error().c_str());
    }
    bool header = false;
    for (const auto& m : status.latest_metrics()) {
      if (m.name().rfind("global/", 0) != 0) continue;
      if (!header) std::printf("  latest global metrics\n");
      header = true;
      std::printf("    %-28s %.4f  (round %d)\n", m.name().c_str(), m.value(), m.round());
    }
  }
  if (wait && j.state() != "done") {
    return absl::AbortedError(
        absl::StrCat("job ", j.id(), " ", j.state(), j.error().empty() ? "" : ": ", j.error()));
  }
  return absl::OkStatus();
}

Status LogsCommand(const UserOptions& options, const std::string& job_id, bool follow) {
  FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options));
  fedsilo::v1::GetLogsRequest request;
  request.set_job_id(job_id);
  for (;;) {
    fedsilo::v1::GetLogsReply reply;
    auto context = client.Context();
    FEDSILO_RETURN_IF_ERROR(
        client.Check(client.stub().GetLogs(context.get(), request, &reply), "GetLogs"));
    for (const auto& e : reply.entries()) {
      if (options.json) {
        std::printf("%s\n", nlohmann::json({{"seq", e.seq()},
                                            {"time", e.time_unix()},
                                            {"level", e.level()},
                                            {"message", e.message()}})
                                .dump()
                                .c_str());
      } else {
        std::printf("%s  %-5s  %s\n", FormatTime(e.time_unix()).c_str(), e.level().c_str(),
                    e.message().c_str());
      }
      request.set_after_seq(e.seq());
    }
    std::fflush(stdout);
    if (!follow || Finished(reply.state())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return absl::OkStatus();
}

Status AbortCommand(const UserOptions& options, const std::string& job_id,
                    const std::string& reason) {
  FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options));
  fedsilo::v1::AbortJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  fedsilo::v1::JobInfo info;
  auto context = client.Context();
  FEDSILO_RETURN_IF_ERROR(
      client.Check(client.stub().AbortJob(context.get(), request, &info), "AbortJob"));
  if (options.json) {
    std::printf("%s\n", InfoJson(info).dump().c_str());
  } else {
    std::printf("%s: %s\n", info.id().c_str(),
                info.state() == "aborted" ? "aborted" : "stopping (the current round is dropped)");
  }
  return absl::OkStatus();
}

Status DownloadCommand(const UserOptions& options, const std::string& job_id,
                       const std::string& out) {
  const std::string path = out.empty() ? job_id + ".fsm" : out;
  FEDSILO_ASSIGN_OR_RETURN(JobsClient client, JobsClient::Connect(options));
  fedsilo::v1::DownloadModelRequest request;
  request.set_job_id(job_id);
  const std::string partial = path + ".partial";
  {
    std::ofstream file(partial, std::ios::binary | std::ios::trunc);
    if (!file) return absl::InvalidArgumentError(absl::StrCat(partial, ": cannot write"));
    // A large model takes as long as the network needs: a day, not 30 s.
    std::unique_ptr<grpc::ClientContext> call = client.DownloadContext();
    auto reader = client.stub().DownloadModel(call.get(), request);
    fedsilo::v1::Chunk chunk;
    bool written = true;
    while (reader->Read(&chunk)) {
      // A full disk ends the download at once, not when the stream does.
      if (!file.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()))) {
        written = false;
        call->TryCancel();
        break;
      }
    }
    Status finished = client.Check(reader->Finish(), "DownloadModel");
    if (!written || !finished.ok() || !file.flush()) {
      std::filesystem::remove(partial);
      return finished.ok() || !written
                 ? absl::InternalError(absl::StrCat(partial, ": write failed"))
                 : finished;
    }
  }
  // The file carries a checksum: refuse to leave a damaged model behind.
  StatusOr<ModelFile> model = ReadModelStateFile(partial);
  if (!model.ok()) {
    std::filesystem::remove(partial);
    return Annotate(model.status(), "downloaded model is damaged");
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot write: ", ec.message()));
  const int64_t values = model->state.num_elements();
  if (options.json) {
    std::printf("%s\n", nlohmann::json({{"path", path},
                                        {"tensors", model->state.tensors().size()},
                                        {"values", values}})
                            .dump()
                            .c_str());
  } else {
    std::printf("wrote %s (%zu tensors, %lld values, after round %s)\n", path.c_str(),
                model->state.tensors().size(), static_cast<long long>(values),
                model->metadata.count("round") ? model->metadata.at("round").c_str() : "?");
  }
  return absl::OkStatus();
}

void RegisterUserCommands(CLI::App& app, Commands& commands) {
  struct Options {
    UserOptions user;
    std::string job_path, job_id, reason, out;
    std::vector<std::string> sets;
    bool wait = false, follow = false;
  };
  auto options = std::make_shared<Options>();
  auto user_command = [&](const char* name, const char* help) {
    CLI::App* c = app.add_subcommand(name, help);
    c->add_option("--kit", options->user.kit_dir, "Your user kit folder")->required();
    c->add_option("--orchestrator", options->user.orchestrator,
                  "host:port to dial (default: the kit's)");
    c->add_flag("--insecure", options->user.insecure,
                "Call WITHOUT TLS (only against an orchestrator run with --insecure)");
    c->add_flag("--json", options->user.json, "Print JSON (the last line of standard output)");
    return c;
  };
  CLI::App* submit = user_command("submit", "Queue a job on the orchestrator; prints its id");
  submit->add_option("job", options->job_path, "Job file (YAML)")->required();
  submit->add_option("--set", options->sets, "Override a job key, as for `run`");
  commands.Add(submit, kNoSetUp, [options]() -> Status {
    FEDSILO_ASSIGN_OR_RETURN(JobConfig job, LoadJob(options->job_path, options->sets));
    return SubmitCommand(options->user, job);
  });
  CLI::App* jobs = user_command("jobs", "List the orchestrator's jobs");
  commands.Add(jobs, kNoSetUp, [options] { return JobsCommand(options->user); });
  CLI::App* status = user_command("status", "A job's state, rounds, silos and latest metrics");
  status->add_option("job_id", options->job_id, "Job id (from submit or jobs)")->required();
  status->add_flag("--wait", options->wait,
                   "Wait until the job has finished; exit status 1 unless it is done");
  commands.Add(status, kNoSetUp,
               [options] { return StatusCommand(options->user, options->job_id, options->wait); });
  CLI::App* logs = user_command("logs", "A job's events: rounds, dropped silos, errors");
  logs->add_option("job_id", options->job_id, "Job id")->required();
  logs->add_flag("--follow,-f", options->follow,
                 "Keep printing new events until the job has finished");
  commands.Add(logs, kNoSetUp,
               [options] { return LogsCommand(options->user, options->job_id, options->follow); });
  CLI::App* abort = user_command("abort", "Stop a queued or running job you submitted");
  abort->add_option("job_id", options->job_id, "Job id")->required();
  abort->add_option("--reason", options->reason, "Recorded in the job's log");
  commands.Add(abort, kNoSetUp,
               [options] { return AbortCommand(options->user, options->job_id, options->reason); });
  CLI::App* download = user_command("download", "Fetch a finished job's final model (.fsm)");
  download->add_option("job_id", options->job_id, "Job id")->required();
  download->add_option("--out,-o", options->out, "Output file (default: <job_id>.fsm)");
  commands.Add(download, kNoSetUp,
               [options] { return DownloadCommand(options->user, options->job_id, options->out); });
}

}  // namespace fedsilo::cli
