// The user-facing Jobs service (JobsService over a JobManager and a real
// SQLite JobStore) as users and impostors call it: every method, by callers
// of every kind, with any job ids, job files, modules and raw request bytes.
// The input is a script (script.h, JobsOp). Each input starts from an empty
// state folder.
//
// The service runs behind a real gRPC server, reached in process; identities
// are claimed in call metadata (insecure mode), since the TLS handshake is
// not what this target exercises.
//
// Properties besides "no crash": only user certificates are served; a job
// is accepted only when its file parses, and then belongs to its submitter;
// only its owner aborts it; only its owner and the federation's leads
// download its model, and get exactly the model the job ended with.
#include <grpc/support/log.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/job_config.h"
#include "core/model_state_file.h"
#include "fedsilo/v1/jobs.grpc.pb.h"
#include "fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "orchestrator/job_manager.h"
#include "orchestrator/job_store.h"
#include "orchestrator/jobs_service.h"
#include "orchestrator/silo_registry.h"
#include "script.h"
#include "transport/orchestrator_service.h"

namespace {

using namespace fedsilo;
using fuzz::JobsOp;
using fuzz::Script;

struct Caller {
  const char* name;
  const char* kind;
};
// "carol" is a lead; "mallory" holds a silo's certificate.
constexpr Caller kCallers[] = {{"alice", "user"},   {"bob", "user"},          {"carol", "user"},
                               {"mallory", "silo"}, {"orch", "orchestrator"}, {"", "user"}};
constexpr char kLead[] = "carol";
constexpr int kMaxOps = 128;

const char* kMethods[] = {"SubmitJob", "ListJobs",      "GetJob",   "GetLogs",
                          "AbortJob",  "DownloadModel", "ListRuns", "GetRun"};

// Modules "load" here when they start with "TS": the orchestrator's real
// check runs TorchScript in a sandbox (ml), which this build does not link.
class FakePreparer : public orchestrator::JobPreparer {
 public:
  StatusOr<orchestrator::PreparedJob> Prepare(const JobConfig& job) override {
    if (job.model.kind == ModelKind::kTorchScript) {
      StatusOr<std::string> module = ReadFile(job.model.torchscript);
      if (!module.ok()) return module.status();
      if (module->rfind("TS", 0) != 0) {
        return absl::InvalidArgumentError("model.torchscript: not a TorchScript module");
      }
    }
    return orchestrator::PreparedJob{};
  }
};

void Quiet() {
  static bool once = [] {
    spdlog::set_level(spdlog::level::off);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)once;
}

// One input: a fresh orchestrator state behind an in-process server.
class Session {
 public:
  explicit Session(Script& script) : script_(script) {
    static int n = 0;
    // In memory where the machine has it: the store syncs every write.
    const std::string base = std::filesystem::is_directory("/dev/shm")
                                 ? "/dev/shm"
                                 : std::filesystem::temp_directory_path().string();
    dir_ = base + "/fedsilo-jobs-fuzz-" + std::to_string(getpid()) + "-" + std::to_string(n++);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    store_ = std::move(*orchestrator::JobStore::Open(dir_ + "/fedsilo.db"));
    manager_ = std::make_unique<orchestrator::JobManager>(dir_, store_.get(), &silos_, &registry_,
                                                          &preparer_);
    manager_->SetLeads({kLead});
    service_ = std::make_unique<orchestrator::JobsService>(
        manager_.get(), transport::PeerAuthenticator{
                            "", [] { return std::chrono::system_clock::now(); }, true, nullptr});
    grpc::ServerBuilder builder;
    transport::ApplyServerLimits(builder);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    channel_ = server_->InProcessChannel(grpc::ChannelArguments());
    stub_ = fedsilo::v1::Jobs::NewStub(channel_);
  }

  ~Session() {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    service_.reset();
    manager_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void Run() {
    // Bounded, so that no input is merely slow: each call is a round trip,
    // and a submit or a finish writes to disk.
    for (int ops = 0; ops < kMaxOps && !script_.done(); ++ops) {
      Step(static_cast<JobsOp>(script_.Byte() % uint8_t(JobsOp::kCount)));
    }
  }

 private:
  const Caller& PickCaller() {
    return kCallers[script_.Byte() % (sizeof(kCallers) / sizeof(kCallers[0]))];
  }
  // A job this input submitted, or any id.
  std::string PickJob() {
    if (script_.Flag() || owners_.empty()) return script_.Bytes(24);
    auto it = owners_.begin();
    std::advance(it, script_.Byte() % owners_.size());
    return it->first;
  }
  // Who submitted job `id`, as the store records it (jobs submitted by raw
  // requests included); a job that does not exist has no owner.
  std::string OwnerOf(const std::string& id) const {
    StatusOr<orchestrator::JobRecord> job = store_->GetJob(id);
    FEDSILO_FUZZ_CHECK(job.ok());
    return job->owner;
  }
  static void Claim(grpc::ClientContext& context, const Caller& caller) {
    context.AddMetadata("x-fedsilo-insecure-name", caller.name);
    context.AddMetadata("x-fedsilo-insecure-kind", caller.kind);
  }
  // Only user certificates are served.
  static void Served(const grpc::Status& s, const Caller& caller) {
    if (s.ok()) FEDSILO_FUZZ_CHECK(std::string(caller.kind) == "user");
  }

  // One op of the script. A caller is read for every op, a finish (no call)
  // included.
  void Step(JobsOp op) {
    const Caller& caller = PickCaller();
    grpc::ClientContext context;
    Claim(context, caller);
    switch (op) {
      case JobsOp::kSubmit:
        CallSubmitJob(context, caller);
        break;
      case JobsOp::kList: {
        fedsilo::v1::ListJobsReply reply;
        Served(stub_->ListJobs(&context, fedsilo::v1::ListJobsRequest(), &reply), caller);
        break;
      }
      case JobsOp::kGet:
        CallGetJob(context, caller);
        break;
      case JobsOp::kLogs: {
        fedsilo::v1::GetLogsRequest request;
        request.set_job_id(PickJob());
        request.set_after_seq(static_cast<int64_t>(script_.Number()));
        fedsilo::v1::GetLogsReply reply;
        Served(stub_->GetLogs(&context, request, &reply), caller);
        break;
      }
      case JobsOp::kAbort:
        CallAbortJob(context, caller);
        break;
      case JobsOp::kDownload:
        CallDownloadModel(context, caller);
        break;
      case JobsOp::kListRuns: {
        fedsilo::v1::ListRunsRequest request;
        request.set_experiment(script_.Bytes(16));
        fedsilo::v1::ListRunsReply reply;
        Served(stub_->ListRuns(&context, request, &reply), caller);
        break;
      }
      case JobsOp::kGetRun: {
        fedsilo::v1::GetRunRequest request;
        request.set_run(PickJob());
        fedsilo::v1::Run reply;
        Served(stub_->GetRun(&context, request, &reply), caller);
        break;
      }
      case JobsOp::kRaw:
        CallRaw(context, caller);
        break;
      case JobsOp::kFinish:
        FinishJob();
        break;
      case JobsOp::kCount:
        break;
    }
  }

  void CallSubmitJob(grpc::ClientContext& context, const Caller& caller) {
    fedsilo::v1::SubmitJobRequest request;
    request.set_job_yaml(script_.Bytes(4096));
    request.set_torchscript(script_.Bytes(512));
    fedsilo::v1::SubmitJobReply reply;
    const grpc::Status s = stub_->SubmitJob(&context, request, &reply);
    Served(s, caller);
    if (!s.ok()) return;
    FEDSILO_FUZZ_CHECK(ParseJobConfig(request.job_yaml(), "job").ok());
    StatusOr<orchestrator::JobRecord> job = store_->GetJob(reply.job_id());
    FEDSILO_FUZZ_CHECK(job.ok() && job->owner == caller.name);
    owners_[reply.job_id()] = caller.name;
  }

  void CallGetJob(grpc::ClientContext& context, const Caller& caller) {
    fedsilo::v1::GetJobRequest request;
    request.set_job_id(PickJob());
    fedsilo::v1::JobStatus reply;
    const grpc::Status s = stub_->GetJob(&context, request, &reply);
    Served(s, caller);
    if (s.ok()) FEDSILO_FUZZ_CHECK(reply.job().id() == request.job_id());
  }

  void CallAbortJob(grpc::ClientContext& context, const Caller& caller) {
    fedsilo::v1::AbortJobRequest request;
    request.set_job_id(PickJob());
    request.set_reason(script_.Bytes(64));
    fedsilo::v1::JobInfo reply;
    const grpc::Status s = stub_->AbortJob(&context, request, &reply);
    Served(s, caller);
    if (s.ok()) FEDSILO_FUZZ_CHECK(OwnerOf(request.job_id()) == caller.name);
  }

  void CallDownloadModel(grpc::ClientContext& context, const Caller& caller) {
    fedsilo::v1::DownloadModelRequest request;
    request.set_job_id(PickJob());
    auto reader = stub_->DownloadModel(&context, request);
    std::string bytes;
    fedsilo::v1::Chunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    const grpc::Status s = reader->Finish();
    Served(s, caller);
    if (!s.ok()) return;
    FEDSILO_FUZZ_CHECK(OwnerOf(request.job_id()) == caller.name ||
                       std::string(caller.name) == kLead);
    FEDSILO_FUZZ_CHECK(finals_.count(request.job_id()) == 1 && bytes == finals_[request.job_id()]);
  }

  // The request's bytes as they come off the wire: the service parses them.
  void CallRaw(grpc::ClientContext& context, const Caller& caller) {
    const std::string name = kMethods[script_.Byte() % (sizeof(kMethods) / sizeof(kMethods[0]))];
    const std::string method = "/fedsilo.v1.Jobs/" + name;
    const std::string bytes = script_.Bytes(4096);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), reply;
    grpc::GenericStub generic(channel_);
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &reply,
                      [&done](grpc::Status s) { done.set_value(std::move(s)); });
    const grpc::Status s = done.get_future().get();
    Served(s, caller);
    if (s.ok() && name == "SubmitJob") {  // as a typed submit: parsed, and the caller's
      fedsilo::v1::SubmitJobRequest submitted;
      FEDSILO_FUZZ_CHECK(submitted.ParseFromString(bytes));
      FEDSILO_FUZZ_CHECK(ParseJobConfig(submitted.job_yaml(), "job").ok());
      std::vector<grpc::Slice> slices;
      FEDSILO_FUZZ_CHECK(reply.Dump(&slices).ok());
      std::string out;
      for (const grpc::Slice& piece : slices) {
        out.append(reinterpret_cast<const char*>(piece.begin()), piece.size());
      }
      fedsilo::v1::SubmitJobReply accepted;
      FEDSILO_FUZZ_CHECK(accepted.ParseFromString(out));
      FEDSILO_FUZZ_CHECK(OwnerOf(accepted.job_id()) == caller.name);
      owners_[accepted.job_id()] = caller.name;
    }
  }

  // The orchestrator ends a job this input submitted, with a final model.
  void FinishJob() {
    if (owners_.empty()) return;
    auto it = owners_.begin();
    std::advance(it, script_.Byte() % owners_.size());
    const std::string& id = it->first;
    ModelState model;
    const int64_t n = 1 + script_.Byte() % 16;
    (void)model.Add(Tensor::FromFloats("w", {n}, std::vector<float>(static_cast<size_t>(n), 0.5f)));
    const std::string bytes = SerializeModelState(model);
    const std::string run_dir = dir_ + "/runs/run-" + id;
    std::filesystem::create_directories(run_dir);
    FEDSILO_FUZZ_CHECK(WriteFileAtomically(run_dir + "/final_model.fsm", bytes).ok());
    FEDSILO_FUZZ_CHECK(store_->SetRunId(id, "run-" + id).ok());
    FEDSILO_FUZZ_CHECK(store_->SetState(id, orchestrator::JobState::kDone).ok());
    finals_[id] = bytes;
  }

  Script& script_;
  std::string dir_;
  std::unique_ptr<orchestrator::JobStore> store_;
  orchestrator::SiloRegistry registry_;
  transport::OrchestratorService silos_{
      "", &registry_, [] { return std::chrono::system_clock::now(); }, /*insecure=*/true};
  FakePreparer preparer_;
  std::unique_ptr<orchestrator::JobManager> manager_;
  std::unique_ptr<orchestrator::JobsService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fedsilo::v1::Jobs::Stub> stub_;
  std::map<std::string, std::string> owners_;  // job -> who submitted it
  std::map<std::string, std::string> finals_;  // job -> its final model's bytes
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 32 * 1024) return 0;
  Quiet();
  Script script(data, size);
  Session session(script);
  session.Run();
  return 0;
}
