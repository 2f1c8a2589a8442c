// Hostile peers beside an honest job, against the real federation: a
// `fedsilo orchestrator` process and two honest `fedsilo silo` processes run a
// job on 127.0.0.1 while a scripted silo in the same job ("mallory", with a
// silo certificate of the federation) breaks the protocol a new way at every
// task, and a scripted user ("eve") and other certificates flood and probe the
// endpoint. The orchestrator must never crash, and the honest job completes.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "federation_processes.h"
#include "fedsilo/v1/federation.grpc.pb.h"
#include "fedsilo/v1/jobs.grpc.pb.h"
#include "secure/provisioner.h"
#include "silo_stream.h"
#include "transport/tls.h"

namespace fedsilo {
namespace {

using ::testing::HasSubstr;
using testing_util::Federation;
using testing_util::LastJson;
using testing_util::Output;
using testing_util::Read;
using namespace std::chrono_literals;
namespace v1 = fedsilo::v1;

std::shared_ptr<grpc::Channel> ChannelAs(const Federation& fed, const std::string& who) {
  auto kit = secure::LoadKit(fed.dir() + "/kits/" + who);
  EXPECT_TRUE(kit.ok()) << kit.status();
  auto files = transport::LoadTlsFiles(*kit);
  EXPECT_TRUE(files.ok()) << files.status();
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel("localhost:" + std::to_string(fed.port()),
                                   transport::MakeChannelCredentials(*files), args);
}

// The ways mallory answers a task, one per task in turn.
enum Attack {
  kAbsurdSize,      // a result announcing an update of 2^62 bytes
  kTruncated,       // half the announced bytes, then "last"
  kDuplicated,      // the bytes twice over
  kGarbage,         // the announced size of bytes that are no model
  kReplayed,        // a result with another task's nonce
  kOutOfOrder,      // a second hello in the middle of a task
  kUnasked,         // update bytes before any result, then a secure reply nobody asked
  kHeartbeatFlood,  // thousands of heartbeats, then a failure
  kSlowDrip,        // the upload a few bytes at a time, slower than the timeout
  kForgedHead,      // an audit log head with a certificate and signature of its own making
  kAttacks
};

const char* AttackName(int a) {
  static const char* names[] = {"absurd size", "truncated",       "duplicated",
                                "garbage",     "replayed",        "out of order",
                                "unasked",     "heartbeat flood", "slow drip",
                                "forged audit head"};
  return names[a];
}

// A silo that follows the protocol only as far as it needs to break it.
class Mallory {
 public:
  explicit Mallory(std::shared_ptr<grpc::Channel> channel) : channel_(std::move(channel)) {}

  // Connects and attacks each task that comes, on the same stream while the
  // orchestrator keeps it open and on a new one when it closed it, until Stop().
  void Run() {
    while (true) {
      testing_util::HandSiloStream s(channel_, 120s);
      auto& stream = s.stream;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) {
          s.context.TryCancel();
          stream->Finish();
          return;
        }
        current_ = &s.context;
      }
      v1::TaskHeader task;
      std::string model;
      bool open = s.hello_sent;
      while (open && ReadTask(stream.get(), &task, &model)) {
        const int attack = next_++ % kAttacks;
        open = Attack_(static_cast<Attack>(attack), *stream, task, model);
        std::lock_guard<std::mutex> lock(mu_);
        done_.insert(attack);
        last_nonce_ = task.nonce();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        current_ = nullptr;
      }
      s.context.TryCancel();
      stream->Finish();
      std::this_thread::sleep_for(20ms);
    }
  }
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (current_ != nullptr) current_->TryCancel();
  }
  std::set<int> done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

 private:
  using Stream = grpc::ClientReaderWriter<v1::SiloMessage, v1::OrchestratorMessage>;

  static bool ReadTask(Stream* stream, v1::TaskHeader* task, std::string* model) {
    v1::OrchestratorMessage m;
    bool have_header = false;
    while (stream->Read(&m)) {
      if (m.has_task()) {
        *task = m.task();
        model->clear();
        have_header = true;
        if (task->model_bytes() == 0) return true;
      } else if (m.has_chunk() && have_header) {
        *model += m.chunk().data();
        if (m.chunk().last()) return true;
      }
    }
    return false;
  }
  static bool AwaitUpload(Stream* stream) {
    v1::OrchestratorMessage m;
    while (stream->Read(&m)) {
      if (m.has_upload()) return true;
    }
    return false;
  }
  static v1::SiloMessage Result(const v1::TaskHeader& task, uint64_t bytes,
                                const std::string& nonce) {
    v1::SiloMessage r;
    r.mutable_result()->set_job_id(task.job_id());
    r.mutable_result()->set_round(task.round());
    r.mutable_result()->set_nonce(nonce);
    r.mutable_result()->set_num_examples(50);
    r.mutable_result()->set_update_bytes(bytes);
    return r;
  }
  static v1::SiloMessage Chunk(std::string data, bool last) {
    v1::SiloMessage c;
    c.mutable_chunk()->set_data(std::move(data));
    c.mutable_chunk()->set_last(last);
    return c;
  }
  static v1::SiloMessage Failed(const v1::TaskHeader& task) {
    v1::SiloMessage f;
    f.mutable_failed()->set_job_id(task.job_id());
    f.mutable_failed()->set_round(task.round());
    f.mutable_failed()->set_nonce(task.nonce());
    f.mutable_failed()->set_reason("mallory gives up");
    return f;
  }

  // Whether the stream may still be open (a truncated upload fails the
  // upload, not the stream).
  bool Attack_(Attack attack, Stream& stream, const v1::TaskHeader& task,
               const std::string& model) {
    const uint64_t n = model.size();
    switch (attack) {
      case kAbsurdSize:
        stream.Write(Result(task, uint64_t{1} << 62, task.nonce()));
        break;
      case kTruncated:
        stream.Write(Result(task, n, task.nonce()));
        if (AwaitUpload(&stream)) stream.Write(Chunk(model.substr(0, n / 2), true));
        break;
      case kDuplicated:
        stream.Write(Result(task, n, task.nonce()));
        if (AwaitUpload(&stream)) {
          stream.Write(Chunk(model, false));
          stream.Write(Chunk(model, true));
        }
        break;
      case kGarbage:
        stream.Write(Result(task, n, task.nonce()));
        if (AwaitUpload(&stream)) stream.Write(Chunk(std::string(n, '\xff'), true));
        break;
      case kReplayed: {
        std::string stale;
        {
          std::lock_guard<std::mutex> lock(mu_);
          stale = last_nonce_.empty() ? std::string(16, 'x') : last_nonce_;
        }
        stream.Write(Result(task, n, stale));
        stream.Write(Failed(task));
        break;
      }
      case kOutOfOrder: {
        v1::SiloMessage hello;
        hello.mutable_hello()->add_datasets("digits");
        stream.Write(hello);
        break;
      }
      case kUnasked: {
        stream.Write(Chunk(std::string(1 << 16, 'u'), true));
        v1::SiloMessage secure;
        secure.mutable_secure()->set_job_id(task.job_id());
        secure.mutable_secure()->set_round(task.round());
        secure.mutable_secure()->set_nonce(task.nonce());
        secure.mutable_secure()->set_payload_bytes(uint64_t{1} << 62);
        stream.Write(secure);
        stream.Write(Failed(task));
        break;
      }
      case kHeartbeatFlood:
        for (int i = 0; i < 5000; ++i) {
          v1::SiloMessage beat;
          beat.mutable_heartbeat()->set_unix_millis(i);
          if (!stream.Write(beat)) break;
        }
        stream.Write(Failed(task));
        break;
      case kSlowDrip:
        stream.Write(Result(task, n, task.nonce()));
        if (AwaitUpload(&stream)) {
          // 64 bytes every 300 ms, past the job's 6 s round_timeout.
          for (size_t at = 0; at < n && at < 64 * 30; at += 64) {
            if (!stream.Write(Chunk(model.substr(at, 64), false))) break;
            std::this_thread::sleep_for(300ms);
          }
        }
        break;
      case kForgedHead: {
        v1::SiloMessage head;
        head.mutable_audit_head()->set_entries(7);
        head.mutable_audit_head()->set_hash(std::string(64, 'f'));
        head.mutable_audit_head()->set_unix_millis(1);
        head.mutable_audit_head()->set_certificate("-----BEGIN CERTIFICATE-----\nforged\n");
        head.mutable_audit_head()->set_signature("not a signature");
        stream.Write(head);
        stream.Write(Failed(task));
        break;
      }
      default:
        break;
    }
    return attack != kAbsurdSize && attack != kOutOfOrder && attack != kSlowDrip &&
           attack != kForgedHead;
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::mutex mu_;
  grpc::ClientContext* current_ = nullptr;
  bool stopping_ = false;
  int next_ = 0;
  std::set<int> done_;
  std::string last_nonce_;
};

// TCP connections that speak no TLS: random bytes, then nothing.
void GarbageConnections(int port, int count) {
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) continue;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      std::string junk(1024, '\0');
      for (size_t j = 0; j < junk.size(); ++j) junk[j] = static_cast<char>((j * 131 + i) & 0xff);
      if (i % 2 == 0) junk.replace(0, 5, "\x16\x03\x01\xff\xff");  // a TLS record that lies
      (void)!write(fd, junk.data(), junk.size());
    }
    close(fd);
  }
}

constexpr char kJob[] =
    "name: beside-hostile-peers\n"
    "data: {dataset: digits}\n"
    "model: {name: mlp}\n"
    "training: {rounds: 12, learning_rate: 0.1, local_epochs: 3}\n"
    "federation: {silos: [a, b, mallory], min_silos: 2, wait_for_silos: 60, "
    "round_timeout: 6}\n";

TEST(HostilePeerTest, TheOrchestratorOutlivesHostileSilosAndUsersAndTheHonestJobCompletes) {
  Federation fed("hostile", {{"mallory", "silo"}, {"trudy", "silo"}, {"eve", "user"}});
  ASSERT_TRUE(fed.StartOrchestrator()) << Read(fed.dir() + "/orchestrator.log");
  Mallory mallory(ChannelAs(fed, "mallory"));
  std::thread mallory_thread([&] { mallory.Run(); });
  fed.StartSilo("a");
  fed.StartSilo("b");
  ASSERT_EQ(fed.User("submit " + fed.WriteJob("job", kJob)).status, 0);

  // While the job runs: eve and the others, each on its own thread.
  std::vector<std::thread> hostile;
  std::atomic<int> unavailable{0};  // calls the orchestrator did not answer at all
  auto count = [&](const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) ++unavailable;
  };
  std::mutex seen_mu;
  std::map<std::string, grpc::Status> seen;  // what each probe got
  auto remember = [&](const std::string& what, const grpc::Status& s) {
    std::lock_guard<std::mutex> lock(seen_mu);
    seen[what] = s;
  };
  // Floods of user calls.
  for (int t = 0; t < 3; ++t) {
    hostile.emplace_back([&] {
      auto jobs = v1::Jobs::NewStub(ChannelAs(fed, "eve"));
      auto federation = v1::Orchestrator::NewStub(ChannelAs(fed, "eve"));
      for (int i = 0; i < 150; ++i) {
        grpc::ClientContext c1, c2, c3;
        c1.set_deadline(std::chrono::system_clock::now() + 20s);
        c2.set_deadline(std::chrono::system_clock::now() + 20s);
        c3.set_deadline(std::chrono::system_clock::now() + 20s);
        v1::GetJobRequest get;
        get.set_job_id(i % 2 ? "job-1" : "no-such-job");
        v1::JobStatus status;
        count(jobs->GetJob(&c1, get, &status));
        v1::ListJobsReply list;
        count(jobs->ListJobs(&c2, v1::ListJobsRequest(), &list));
        v1::WhoAmIReply me;
        count(federation->WhoAmI(&c3, v1::WhoAmIRequest(), &me));
      }
    });
  }
  // Eve probes what is not hers, and sends what no parser should choke on.
  hostile.emplace_back([&] {
    auto jobs = v1::Jobs::NewStub(ChannelAs(fed, "eve"));
    {
      grpc::ClientContext c;
      v1::AbortJobRequest abort;
      abort.set_job_id("job-1");
      v1::JobInfo info;
      remember("abort", jobs->AbortJob(&c, abort, &info));
    }
    {
      grpc::ClientContext c;
      v1::SubmitJobRequest huge;
      huge.set_job_yaml(std::string(size_t{70} << 20, 'a'));
      v1::SubmitJobReply reply;
      remember("huge", jobs->SubmitJob(&c, huge, &reply));
    }
    {
      grpc::ClientContext c;
      v1::SubmitJobRequest deep;
      deep.set_job_yaml("data: " + std::string(200000, '[') + std::string(200000, ']') + "\n");
      v1::SubmitJobReply reply;
      remember("deep", jobs->SubmitJob(&c, deep, &reply));
    }
    {
      grpc::ClientContext c;
      v1::SubmitJobRequest module;
      module.set_job_yaml(
          "data: {dataset: digits}\nmodel: {torchscript: net.pt}\n"
          "federation: {silos: [a, b]}\n");
      module.set_torchscript(std::string(1 << 20, '\x7f'));
      v1::SubmitJobReply reply;
      remember("module", jobs->SubmitJob(&c, module, &reply));
    }
    {
      // A silo stream with a user certificate.
      testing_util::HandSiloStream s(ChannelAs(fed, "eve"), 10s);
      auto& stream = s.stream;
      stream->WritesDone();
      v1::OrchestratorMessage m;
      while (stream->Read(&m)) {
      }
      remember("user stream", stream->Finish());
    }
  });
  // The job API with a silo's and with the orchestrator's own certificate.
  hostile.emplace_back([&] {
    for (const char* who : {"mallory", "orchestrator"}) {
      auto jobs = v1::Jobs::NewStub(ChannelAs(fed, who));
      grpc::ClientContext c;
      v1::ListJobsReply list;
      remember(std::string("jobs as ") + who, jobs->ListJobs(&c, v1::ListJobsRequest(), &list));
    }
  });
  // Trudy (a silo of the federation, not in the job) churns streams.
  hostile.emplace_back([&] {
    const auto channel = ChannelAs(fed, "trudy");
    for (int i = 0; i < 40; ++i) {
      testing_util::HandSiloStream s(channel, 5s);
      auto& stream = s.stream;
      if (i % 3 == 0) {  // after the hello, a result that answers no task
        v1::SiloMessage result;
        result.mutable_result()->set_job_id("job-1");
        result.mutable_result()->set_update_bytes(uint64_t{1} << 45);
        stream->Write(result);
      }
      s.context.TryCancel();
      stream->Finish();
    }
  });
  hostile.emplace_back([&] { GarbageConnections(fed.port(), 40); });
  for (std::thread& t : hostile) t.join();

  // The honest job completes: every round, with both honest silos in each.
  Output waited = fed.User("status job-1 --wait");
  mallory.Stop();
  mallory_thread.join();
  ASSERT_EQ(waited.status, 0) << waited.out << waited.err;
  ASSERT_TRUE(fed.Alive("orchestrator")) << Read(fed.dir() + "/orchestrator.log");
  const nlohmann::json status = fed.Status("job-1");
  EXPECT_EQ(status["state"], "done");
  ASSERT_EQ(status["rounds"].size(), 12u);
  for (const auto& s : status["silos"]) {
    if (s["name"] == "mallory") {
      EXPECT_EQ(s["rounds_taken_part"], 0) << s;
    } else {
      EXPECT_EQ(s["rounds_taken_part"], 12) << s;
    }
  }
  EXPECT_EQ(unavailable.load(), 0);

  // Each probe was refused, by name, and nothing it sent got in.
  EXPECT_EQ(seen["abort"].error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(seen["huge"].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(seen["deep"].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(seen["module"].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(seen["user stream"].error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(seen["jobs as mallory"].error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(seen["jobs as orchestrator"].error_code(), grpc::StatusCode::PERMISSION_DENIED);
  Output download = fed.User("download job-1 --out " + fed.dir() + "/eve.fsm", "eve");
  EXPECT_NE(download.status, 0);
  EXPECT_THAT(download.err, HasSubstr("belong to 'alice', who submitted it; 'eve' may not"));
  nlohmann::json jobs = LastJson(fed.User("jobs --json").out);
  EXPECT_EQ(jobs["jobs"].size(), 1u);  // none of eve's submissions became a job

  // Mallory tried most of its attacks; each broken stream was closed with a
  // reason that names it, and the orchestrator went on.
  const std::set<int> tried = mallory.done();
  EXPECT_GE(tried.size(), 6u);
  const std::string log = Read(fed.dir() + "/orchestrator.log");
  const std::map<int, std::string> reasons = {
      {kAbsurdSize, "announced an update of 4611686018427387904 bytes"},
      {kTruncated, "were announced"},
      {kDuplicated, "more bytes than the announced"},
      {kGarbage, "not a fedsilo model file"},
      {kHeartbeatFlood, "mallory gives up"},
      {kReplayed, "does not answer the task that is out (stale or replayed)"},
      {kOutOfOrder, "unexpected message"},
      {kUnasked, "update bytes nobody asked for"},
      {kSlowDrip, "upload not finished within"},
      {kForgedHead, "its audit log head"},
  };
  for (int attack : tried) {
    auto it = reasons.find(attack);
    if (it != reasons.end()) {
      EXPECT_THAT(log, HasSubstr(it->second)) << AttackName(attack);
    }
  }
  // The honest silos' model is what the orchestrator serves alice.
  EXPECT_EQ(fed.User("download job-1 --out " + fed.dir() + "/model.fsm").status, 0);
}

}  // namespace
}  // namespace fedsilo
