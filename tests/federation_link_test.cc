// The orchestrator's gRPC endpoint and the silo client, for real: kits from
// the provisioner, mutual TLS, a server on 127.0.0.1 with an OS-chosen port.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/job_config.h"
#include "core/job_schema.h"
#include "core/model_state.h"
#include "core/model_state_file.h"
#include "core/mutex.h"
#include "core/version.h"
#include "orchestrator/silo_registry.h"
#include "secure/provisioner.h"
#include "secure/revocation.h"
#include "silo_stream.h"
#include "transport/orchestrator_service.h"
#include "transport/silo_client.h"
#include "transport/tls.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo {
namespace {

using secure::ParticipantKind;
using ::testing::HasSubstr;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Provisions a federation under a fresh folder; `issued_at` back-dates it.
std::string Provision(const std::string& name, std::chrono::system_clock::time_point issued_at,
                      int days = 30) {
  const std::string dir = ::testing::TempDir() + "/link_" + name;
  fs::remove_all(dir);
  secure::FederationSpec spec;
  spec.name = "hospitals";
  spec.certificate_days = days;
  spec.participants = {{"hospital-a", ParticipantKind::kSilo}, {"alice", ParticipantKind::kUser}};
  EXPECT_TRUE(secure::ProvisionFederation(spec, dir, issued_at).ok());
  return dir;
}

transport::TlsFiles Files(const std::string& kit_dir) {
  auto kit = secure::LoadKit(kit_dir);
  EXPECT_TRUE(kit.ok()) << kit.status();
  auto files = transport::LoadTlsFiles(*kit);
  EXPECT_TRUE(files.ok()) << files.status();
  return std::move(files).value();
}

// An orchestrator endpoint with a registry, serving on 127.0.0.1.
struct Endpoint {
  explicit Endpoint(const std::string& kits)
      : files(Files(kits + "/orchestrator")),
        service(files.ca_pem, &registry, [] { return std::chrono::system_clock::now(); }) {
    auto s = transport::GrpcServer::Start("127.0.0.1:0", transport::MakeServerCredentials(files),
                                          {&service});
    EXPECT_TRUE(s.ok()) << s.status();
    server = std::move(s).value();
  }
  std::string target() const { return "localhost:" + std::to_string(server->port()); }

  transport::TlsFiles files;
  orchestrator::SiloRegistry registry;
  transport::OrchestratorService service;
  std::unique_ptr<transport::GrpcServer> server;
};

transport::SiloClient Client(const std::string& kit_dir, const std::string& target) {
  transport::SiloClientOptions options;
  options.target = target;
  options.datasets = {"digits", "mnist"};
  options.heartbeat_interval = 100ms;
  options.initial_backoff = 100ms;
  options.max_backoff = 400ms;
  return transport::SiloClient(transport::MakeChannelCredentials(Files(kit_dir)), options);
}

template <typename F>
bool WaitFor(F condition, std::chrono::milliseconds limit = 120s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

TEST(FederationLinkTest, IdentityComesFromTheCertificate) {
  const std::string kits = Provision("identity", std::chrono::system_clock::now());
  Endpoint endpoint(kits);
  auto silo = Client(kits + "/hospital-a", endpoint.target());
  auto me = silo.WhoAmI(60s);
  ASSERT_TRUE(me.ok()) << me.status();
  EXPECT_EQ(me->name(), "hospital-a");
  EXPECT_EQ(me->kind(), "silo");
  EXPECT_EQ(me->federation(), "hospitals");

  auto user = Client(kits + "/alice", endpoint.target());
  auto alice = user.WhoAmI(60s);
  ASSERT_TRUE(alice.ok()) << alice.status();
  EXPECT_EQ(alice->kind(), "user");
}

TEST(FederationLinkTest, SiloConnectsSendsHeartbeatsAndIsSeenToLeave) {
  const std::string kits = Provision("session", std::chrono::system_clock::now());
  Endpoint endpoint(kits);
  auto silo = Client(kits + "/hospital-a", endpoint.target());
  std::thread runner([&] { silo.Run().IgnoreError(); });
  ASSERT_TRUE(WaitFor([&] { return silo.connected(); }));
  ASSERT_TRUE(WaitFor([&] {
    auto s = endpoint.registry.Snapshot();
    return s.size() == 1 && s[0].connected;
  }));
  auto status = endpoint.registry.Snapshot()[0];
  EXPECT_EQ(status.name, "hospital-a");
  EXPECT_EQ(status.datasets, (std::vector<std::string>{"digits", "mnist"}));
  const auto first_seen = status.last_seen;
  EXPECT_TRUE(WaitFor([&] { return endpoint.registry.Snapshot()[0].last_seen > first_seen; }))
      << "no heartbeat arrived";

  silo.Stop();
  runner.join();
  EXPECT_TRUE(WaitFor([&] { return !endpoint.registry.Snapshot()[0].connected; }));
}

TEST(FederationLinkTest, SiloReconnectsAfterTheOrchestratorRestarts) {
  const std::string kits = Provision("restart", std::chrono::system_clock::now());
  auto endpoint = std::make_unique<Endpoint>(kits);
  const int port = endpoint->server->port();
  auto silo = Client(kits + "/hospital-a", endpoint->target());
  std::thread runner([&] { silo.Run().IgnoreError(); });
  ASSERT_TRUE(WaitFor([&] { return silo.sessions() == 1 && silo.connected(); }));

  endpoint.reset();  // the orchestrator goes away
  ASSERT_TRUE(WaitFor([&] { return !silo.connected(); }));

  // A new orchestrator on the same port: the silo finds it by itself.
  auto files = Files(kits + "/orchestrator");
  orchestrator::SiloRegistry registry;
  transport::OrchestratorService service(files.ca_pem, &registry,
                                         [] { return std::chrono::system_clock::now(); });
  auto server = transport::GrpcServer::Start("127.0.0.1:" + std::to_string(port),
                                             transport::MakeServerCredentials(files), {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(WaitFor([&] { return silo.sessions() == 2 && silo.connected(); }));
  EXPECT_TRUE(WaitFor([&] {
    auto s = registry.Snapshot();
    return s.size() == 1 && s[0].connected;
  }));
  silo.Stop();
  runner.join();
}

// A silo stream of `files`' kit driven by hand, its hello sent.
testing_util::HandSiloStream RawSiloStream(const std::string& target,
                                           const transport::TlsFiles& files) {
  return testing_util::HandSiloStream(
      grpc::CreateChannel(target, transport::MakeChannelCredentials(files)), 20s);
}

// A silo that answers its task announcing an update of 2^62 bytes (once, the
// orchestrator reserved that much and crashed on its next write): its stream
// is closed naming why, the task fails, and an honest silo is served after.
TEST(FederationLinkTest, ASiloAnnouncingAnAbsurdUpdateIsCutOffAndTheOrchestratorGoesOn) {
  const std::string kits = Provision("absurd", std::chrono::system_clock::now());
  Endpoint endpoint(kits);
  auto raw = RawSiloStream(endpoint.target(), Files(kits + "/hospital-a"));
  ASSERT_TRUE(raw.hello_sent);
  auto& stream = raw.stream;
  ASSERT_TRUE(WaitFor([&] { return endpoint.service.ConnectedSilos().size() == 1; }));

  JobConfig job;
  job.data.dataset = "digits";
  job.federation.silos = {"hospital-a"};
  ModelState global;
  ASSERT_TRUE(global.Add(Tensor::FromFloats("w", {4}, {1, 2, 3, 4})).ok());
  transport::TaskRequest request{"run", 1, 7, &job, nullptr, transport::FitTask{&global}};
  StatusOr<transport::FitReply> reply = absl::UnknownError("not yet");
  std::thread orchestrator([&] { reply = endpoint.service.RunTask("hospital-a", request, 60s); });
  // The hostile silo: read the task, answer with an absurd size.
  fedsilo::v1::OrchestratorMessage task;
  while (stream->Read(&task) && !task.has_task()) {
  }
  ASSERT_TRUE(task.has_task());
  fedsilo::v1::SiloMessage result;
  result.mutable_result()->set_job_id(task.task().job_id());
  result.mutable_result()->set_round(task.task().round());
  result.mutable_result()->set_nonce(task.task().nonce());
  result.mutable_result()->set_update_bytes(uint64_t{1} << 62);
  stream->Write(result);
  orchestrator.join();
  ASSERT_FALSE(reply.ok());
  EXPECT_THAT(std::string(reply.status().message()),
              HasSubstr("announced an update of 4611686018427387904 bytes for a task whose update "
                        "is at most"));
  fedsilo::v1::OrchestratorMessage rest;
  while (stream->Read(&rest)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The orchestrator serves the next silo as if nothing had happened.
  class Echo : public transport::SiloHandler {
    StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
      transport::FitReply out;
      out.update = *transport::ModelOf(r.task);
      out.num_examples = 3;
      return out;
    }
  } echo;
  transport::SiloClientOptions options;
  options.target = endpoint.target();
  options.datasets = {"digits"};
  options.heartbeat_interval = 100ms;
  options.initial_backoff = 100ms;
  transport::SiloClient honest(transport::MakeChannelCredentials(Files(kits + "/hospital-a")),
                               options, &echo);
  std::thread runner([&] { honest.Run().IgnoreError(); });
  struct Join {
    transport::SiloClient& client;
    std::thread& thread;
    ~Join() {
      client.Stop();
      thread.join();
    }
  } join{honest, runner};
  ASSERT_TRUE(WaitFor([&] { return endpoint.service.ConnectedSilos().size() == 1; }));
  StatusOr<transport::FitReply> fine = absl::UnknownError("not yet");
  for (int attempt = 0; attempt < 50; ++attempt) {  // until the new session is the one registered
    fine = endpoint.service.RunTask("hospital-a",
                                    {"run", 2, 7, &job, nullptr, transport::FitTask{&global}}, 60s);
    if (fine.ok()) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(fine.ok()) << fine.status();
  ASSERT_NE(fine->source, nullptr);
  auto update = fine->source->Fetch();
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(update->tensors()[0].floats()[3], 4.0f);
}

TEST(FederationLinkTest, UserCertificateCannotOpenASiloStream) {
  const std::string kits = Provision("kind", std::chrono::system_clock::now());
  Endpoint endpoint(kits);
  auto files = Files(kits + "/alice");
  auto channel = grpc::CreateChannel(endpoint.target(), transport::MakeChannelCredentials(files));
  auto stub = fedsilo::v1::Orchestrator::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);
  auto stream = stub->Connect(&context);
  fedsilo::v1::SiloMessage hello;
  hello.mutable_hello()->add_datasets("digits");
  stream->Write(hello);
  stream->WritesDone();
  fedsilo::v1::OrchestratorMessage reply;
  while (stream->Read(&reply)) {
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("'alice' holds a user certificate; this call needs a silo certificate"));
  EXPECT_TRUE(endpoint.registry.Snapshot().empty());
}

TEST(FederationLinkTest, CertificatesFromAnotherFederationAreRefusedAtTheHandshake) {
  const std::string ours = Provision("ours", std::chrono::system_clock::now());
  const std::string theirs = Provision("theirs", std::chrono::system_clock::now());
  Endpoint endpoint(ours);
  auto intruder = Client(theirs + "/hospital-a", endpoint.target());
  auto me = intruder.WhoAmI(60s);
  ASSERT_FALSE(me.ok());
  EXPECT_EQ(me.status().code(), absl::StatusCode::kUnavailable) << me.status();
  EXPECT_TRUE(endpoint.registry.Snapshot().empty());
}

TEST(FederationLinkTest, ServerRefusesClientCertificatesFromAnotherCa) {
  // The intruder trusts our CA (so it accepts the server) but presents a
  // certificate that another CA signed: the server must refuse it.
  const std::string ours = Provision("ours2", std::chrono::system_clock::now());
  const std::string theirs = Provision("theirs2", std::chrono::system_clock::now());
  Endpoint endpoint(ours);
  transport::TlsFiles mixed = Files(theirs + "/hospital-a");
  mixed.ca_pem = Files(ours + "/hospital-a").ca_pem;
  transport::SiloClientOptions options;
  options.target = endpoint.target();
  transport::SiloClient intruder(transport::MakeChannelCredentials(mixed), options);
  auto me = intruder.WhoAmI(60s);
  ASSERT_FALSE(me.ok());
  EXPECT_EQ(me.status().code(), absl::StatusCode::kUnavailable) << me.status();
  // The same client with its own federation's certificate gets in.
  transport::SiloClient insider(transport::MakeChannelCredentials(Files(ours + "/hospital-a")),
                                options);
  EXPECT_TRUE(insider.WhoAmI(60s).ok());
}

// Only the silo's certificate expired (issued 40 days ago for 30); the
// orchestrator's and the CA are valid. The expired silo is refused at the
// handshake, and its diagnosis says why; a valid silo of the same federation
// gets in (the control).
TEST(FederationLinkTest, AnExpiredSiloCertificateIsRefusedAndAValidOneGetsIn) {
  const auto now = std::chrono::system_clock::now();
  const std::string kits = Provision("expired", now);
  ASSERT_TRUE(
      secure::AddParticipant(kits, {"hospital-b", ParticipantKind::kSilo}, 30, now - 40 * 24h)
          .ok());
  Endpoint endpoint(kits);
  auto valid = Client(kits + "/hospital-a", endpoint.target()).WhoAmI(60s);
  ASSERT_TRUE(valid.ok()) << valid.status();
  EXPECT_EQ(valid->name(), "hospital-a");

  auto expired = Client(kits + "/hospital-b", endpoint.target()).WhoAmI(60s);
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kUnavailable) << expired.status();
  const auto d =
      transport::DiagnoseConnection(endpoint.target(), Files(kits + "/hospital-b"), false, 60s);
  EXPECT_EQ(d.kind, transport::ConnectionDiagnosis::Kind::kCertificate) << d.reason;
  EXPECT_THAT(d.reason, HasSubstr("expired")) << d.reason;
  EXPECT_TRUE(endpoint.registry.Snapshot().empty() ||
              endpoint.registry.Snapshot()[0].name != "hospital-b");
}

// An endpoint that reads the revocation list of its kit, with a clock the
// test moves.
struct RevokingEndpoint {
  explicit RevokingEndpoint(const std::string& kits)
      : files(Files(kits + "/orchestrator")), service(files.ca_pem, &registry, [this] {
          return std::chrono::system_clock::now() + std::chrono::hours(ahead_hours.load());
        }) {
    auto kit = secure::LoadKit(kits + "/orchestrator");
    auto list = secure::RevocationList::Open(kit->crl_path, files.ca_pem);
    EXPECT_TRUE(list.ok()) << list.status();
    revoked = *list;
    revoked->set_recheck(50ms);
    service.SetRevocationList(revoked);
    auto s = transport::GrpcServer::Start(
        "127.0.0.1:0", transport::MakeServerCredentials(files, revoked), {&service});
    EXPECT_TRUE(s.ok()) << s.status();
    server = std::move(s).value();
  }
  std::string target() const { return "localhost:" + std::to_string(server->port()); }
  bool Connected(const std::string& silo) {
    for (const auto& s : registry.Snapshot()) {
      if (s.name == silo) return s.connected;
    }
    return false;
  }

  std::atomic<int> ahead_hours{0};
  transport::TlsFiles files;
  orchestrator::SiloRegistry registry;
  transport::OrchestratorService service;
  std::shared_ptr<secure::RevocationList> revoked;
  std::unique_ptr<transport::GrpcServer> server;
};

TEST(FederationLinkTest, ARevokedSiloLosesItsStreamAndIsRefusedAtTheHandshakeOthersGoOn) {
  const auto now = std::chrono::system_clock::now();
  const std::string kits = Provision("revoke", now);
  ASSERT_TRUE(secure::AddParticipant(kits, {"hospital-b", ParticipantKind::kSilo}, 30, now).ok());
  RevokingEndpoint endpoint(kits);
  auto a = Client(kits + "/hospital-a", endpoint.target());
  auto b = Client(kits + "/hospital-b", endpoint.target());
  std::thread run_a([&] { a.Run().IgnoreError(); });
  std::thread run_b([&] { b.Run().IgnoreError(); });
  ASSERT_TRUE(WaitFor(
      [&] { return endpoint.Connected("hospital-a") && endpoint.Connected("hospital-b"); }));
  auto before = Client(kits + "/hospital-a", endpoint.target()).WhoAmI(60s);
  ASSERT_TRUE(before.ok()) << before.status();  // the control: it gets in until revoked

  ASSERT_TRUE(secure::RevokeParticipant(kits, "hospital-a", now).ok());
  // Its open stream is closed within a heartbeat or two (100 ms here)...
  EXPECT_TRUE(WaitFor([&] { return !endpoint.Connected("hospital-a"); }, 120s));
  // ... it cannot come back: the handshake refuses it ...
  auto after = Client(kits + "/hospital-a", endpoint.target()).WhoAmI(60s);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
  // ... and the other silo is still there, heartbeating.
  EXPECT_TRUE(endpoint.Connected("hospital-b"));
  std::chrono::system_clock::time_point seen{};
  for (const auto& s : endpoint.registry.Snapshot()) {
    if (s.name == "hospital-b") seen = s.last_seen;
  }
  EXPECT_TRUE(WaitFor([&] {
    for (const auto& s : endpoint.registry.Snapshot()) {
      if (s.name == "hospital-b") return s.last_seen > seen;
    }
    return false;
  }));
  EXPECT_TRUE(Client(kits + "/hospital-b", endpoint.target()).WhoAmI(60s).ok());
  auto listed = secure::ListParticipants(kits);
  ASSERT_TRUE(listed.ok()) << listed.status();
  for (const auto& r : *listed) EXPECT_EQ(r.revoked, r.name == "hospital-a") << r.name;
  a.Stop();
  b.Stop();
  run_a.join();
  run_b.join();
}

// A revoked or expired silo that sends nothing (no heartbeat, no message the
// stream would check) gets no task, and its stream is closed by the sweep.
TEST(FederationLinkTest, ARevokedSiloThatStaysSilentGetsNoTaskAndLosesItsStream) {
  const auto now = std::chrono::system_clock::now();
  for (bool sweep : {false, true}) {
    const std::string kits = Provision(sweep ? "expire-silent" : "revoke-silent", now);
    RevokingEndpoint endpoint(kits);
    endpoint.service.set_validity_sweep(sweep ? 100ms : std::chrono::milliseconds(3600000));
    auto raw = RawSiloStream(endpoint.target(), Files(kits + "/hospital-a"));
    ASSERT_TRUE(raw.hello_sent);
    auto& stream = raw.stream;
    ASSERT_TRUE(WaitFor([&] { return endpoint.Connected("hospital-a"); }));
    if (!sweep) {
      ASSERT_TRUE(secure::RevokeParticipant(kits, "hospital-a", now).ok());
      // Once the list has been re-read (a look every 50 ms here).
      ASSERT_TRUE(WaitFor([&] {
        endpoint.revoked->IsRevoked("");  // looks at the file when due
        return endpoint.revoked->size() == 1;
      }));
      JobConfig job;
      job.data.dataset = "digits";
      job.federation.silos = {"hospital-a"};
      ModelState global;
      ASSERT_TRUE(global.Add(Tensor::FromFloats("w", {4}, {1, 2, 3, 4})).ok());
      StatusOr<transport::FitReply> reply = endpoint.service.RunTask(
          "hospital-a", {"run", 1, 7, &job, nullptr, transport::FitTask{&global}}, 60s);
      ASSERT_FALSE(reply.ok());
      EXPECT_THAT(std::string(reply.status().message()),
                  HasSubstr("silo 'hospital-a' was refused: the certificate of 'hospital-a'"));
      EXPECT_THAT(std::string(reply.status().message()), HasSubstr("was revoked"));
    } else {
      // Expired while connected (the orchestrator's clock 31 days on): the
      // sweep finds it on its own.
      endpoint.ahead_hours = 31 * 24;
      EXPECT_TRUE(WaitFor([&] { return !endpoint.Connected("hospital-a"); }, 120s));
    }
    // Nothing of a task reached it; its stream ends.
    fedsilo::v1::OrchestratorMessage message;
    bool task = false;
    while (stream->Read(&message)) task |= message.has_task() || message.has_chunk();
    EXPECT_FALSE(task);
    // Closed by the orchestrator (not by the client's own 20 s deadline).
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_TRUE(WaitFor([&] { return !endpoint.Connected("hospital-a"); }, 120s));
  }
}

TEST(FederationLinkTest, ACertificateThatExpiresLosesItsOpenStream) {
  const std::string kits = Provision("expire-open", std::chrono::system_clock::now(), 30);
  RevokingEndpoint endpoint(kits);
  auto silo = Client(kits + "/hospital-a", endpoint.target());
  std::thread runner([&] { silo.Run().IgnoreError(); });
  ASSERT_TRUE(WaitFor([&] { return endpoint.Connected("hospital-a"); }));
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(endpoint.Connected("hospital-a"));  // heartbeats kept it while valid
  endpoint.ahead_hours = 31 * 24;                 // the orchestrator's clock: 31 days on
  EXPECT_TRUE(WaitFor([&] { return !endpoint.Connected("hospital-a"); }, 120s));
  // A new stream is refused per call (the handshake uses the machine's own clock).
  auto me = silo.WhoAmI(60s);
  ASSERT_FALSE(me.ok());
  EXPECT_THAT(std::string(me.status().message()), HasSubstr("expired"));
  silo.Stop();
  runner.join();
}

TEST(FederationLinkTest, TheDiagnosisNamesWhatIsWrongWithTheOrchestratorsCertificate) {
  // Served under a name the client does not dial.
  const std::string dir = ::testing::TempDir() + "/link_names";
  fs::remove_all(dir);
  secure::FederationSpec spec;
  spec.name = "hospitals";
  spec.orchestrator_hosts = {"orch.example.org"};
  spec.participants = {{"hospital-a", ParticipantKind::kSilo}};
  ASSERT_TRUE(secure::ProvisionFederation(spec, dir, std::chrono::system_clock::now()).ok());
  Endpoint named(dir);
  const std::string by_ip = "127.0.0.1:" + std::to_string(named.server->port());
  auto d = transport::DiagnoseConnection(by_ip, Files(dir + "/hospital-a"), false, 60s);
  EXPECT_EQ(d.kind, transport::ConnectionDiagnosis::Kind::kCertificate);
  EXPECT_THAT(d.reason, HasSubstr("does not name '127.0.0.1' (it names: orch.example.org)"));

  // Expired (the whole federation, issued 40 days ago for 30).
  const std::string old =
      Provision("diag-expired", std::chrono::system_clock::now() - 40 * 24h, 30);
  Endpoint expired(old);
  d = transport::DiagnoseConnection(expired.target(), Files(old + "/hospital-a"), false, 60s);
  EXPECT_EQ(d.kind, transport::ConnectionDiagnosis::Kind::kCertificate);
  EXPECT_THAT(d.reason, HasSubstr("the orchestrator's certificate expired on"));
  EXPECT_THAT(std::string(transport::CheckOwnCertificate(Files(old + "/hospital-a"), "a.crt",
                                                         std::chrono::system_clock::now())
                              .message()),
              HasSubstr("a.crt: this kit's certificate expired on"));

  // Nothing listening: the network, worth retrying.
  d = transport::DiagnoseConnection("127.0.0.1:1", Files(dir + "/hospital-a"), false, 60s);
  EXPECT_EQ(d.kind, transport::ConnectionDiagnosis::Kind::kNetwork);
  EXPECT_TRUE(d.Transient());
}

TEST(FederationLinkTest, ASiloGivesUpAfterThreeIdenticalCertificateRefusalsButNotOnTheNetwork) {
  const std::string ours = Provision("giveup-ours", std::chrono::system_clock::now());
  const std::string theirs = Provision("giveup-theirs", std::chrono::system_clock::now());
  Endpoint endpoint(ours);
  transport::SiloClientOptions options;
  options.target = endpoint.target();
  options.initial_backoff = 20ms;
  options.max_backoff = 40ms;
  transport::TlsFiles intruder = Files(theirs + "/hospital-a");
  options.diagnose = [&] {
    return transport::DiagnoseConnection(options.target, intruder, false, 60s);
  };
  transport::SiloClient silo(transport::MakeChannelCredentials(intruder), options);
  const Status gave_up = silo.Run();  // returns by itself
  EXPECT_EQ(gave_up.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(gave_up.message()), HasSubstr("is not from this kit's CA"));
  EXPECT_THAT(std::string(gave_up.message()), HasSubstr("(3 attempts; retrying will not help)"));

  // Nobody listening: it keeps trying until stopped.
  transport::SiloClientOptions away = options;
  away.target = "127.0.0.1:1";
  transport::TlsFiles mine = Files(ours + "/hospital-a");
  away.diagnose = [&] { return transport::DiagnoseConnection(away.target, mine, false, 60s); };
  transport::SiloClient patient(transport::MakeChannelCredentials(mine), away);
  std::atomic<bool> returned{false};
  std::thread runner([&] {
    patient.Run().IgnoreError();
    returned = true;
  });
  std::this_thread::sleep_for(1s);  // some twenty attempts
  EXPECT_FALSE(returned.load());
  patient.Stop();
  runner.join();
}

// Silos upgrade on their own schedules. A silo that reads only job schema 1
// (what fedsilo 0.1 reads) runs jobs that leave the newer keys at their
// defaults -- and reads them strictly as schema 1, so a newer key sent to it
// would fail the task -- and is refused, by name, a job that needs one.
TEST(FederationLinkTest, AnOlderSiloRunsTheJobsItCanReadAndIsRefusedOneThatNeedsANewerKey) {
  const std::string kits = Provision("older", std::chrono::system_clock::now());
  Endpoint endpoint(kits);
  class Recorder : public transport::SiloHandler {
   public:
    StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
      lr_decay = r.job->training.lr_decay;
      transport::FitReply out;
      out.update = *transport::ModelOf(r.task);
      out.num_examples = 3;
      return out;
    }
    std::atomic<double> lr_decay{0};
  } recorder;
  ModelState global;
  ASSERT_TRUE(global.Add(Tensor::FromFloats("w", {4}, {1, 2, 3, 4})).ok());
  JobConfig plain;
  plain.data.dataset = "digits";
  plain.federation.silos = {"hospital-a"};
  JobConfig decaying = plain;
  decaying.training.lr_decay = 0.9;

  const auto run_silo = [&](std::vector<int> job_schemas, const std::function<void()>& body) {
    transport::SiloClientOptions options;
    options.target = endpoint.target();
    options.datasets = {"digits"};
    options.heartbeat_interval = 100ms;
    options.initial_backoff = 100ms;
    options.job_schemas = std::move(job_schemas);
    transport::SiloClient silo(transport::MakeChannelCredentials(Files(kits + "/hospital-a")),
                               options, &recorder);
    std::thread runner([&] { silo.Run().IgnoreError(); });
    body();
    silo.Stop();
    runner.join();
  };
  // Fit until the session of the silo just started is the one registered.
  const auto fit = [&](const JobConfig& job, int round) {
    StatusOr<transport::FitReply> reply = absl::UnknownError("not yet");
    for (int attempt = 0; attempt < 100; ++attempt) {
      reply = endpoint.service.RunTask(
          "hospital-a", {"run", round, 7, &job, nullptr, transport::FitTask{&global}}, 60s);
      if (!absl::IsUnavailable(reply.status()) && !absl::IsNotFound(reply.status())) break;
      std::this_thread::sleep_for(100ms);
    }
    // The update is taken, as a round takes it: the session is free again.
    if (reply.ok()) {
      StatusOr<ModelState> update = reply->source->Fetch();
      EXPECT_TRUE(update.ok()) << update.status();
    }
    return reply;
  };

  run_silo({1}, [&] {
    StatusOr<transport::FitReply> ran = fit(plain, 1);
    ASSERT_TRUE(ran.ok()) << ran.status();
    EXPECT_EQ(recorder.lr_decay.load(), 1.0);
    StatusOr<transport::FitReply> refused = fit(decaying, 2);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr(absl::StrCat("silo 'hospital-a' runs ", FedsiloRelease(),
                                       ", which reads job schema 1; this job sets "
                                       "training.lr_decay, which needs job schema 2: upgrade "
                                       "silo 'hospital-a' to fedsilo ",
                                       FirstReleaseReading(2), " or later")));
    // The refusal costs the silo nothing: its session takes the next task.
    StatusOr<transport::FitReply> again = fit(plain, 3);
    EXPECT_TRUE(again.ok()) << again.status();
  });
  ASSERT_TRUE(WaitFor([&] { return endpoint.service.ConnectedSilos().empty(); }));
  // Upgraded, the same silo runs the job.
  run_silo({}, [&] {
    ASSERT_TRUE(WaitFor([&] { return endpoint.service.ConnectedSilos().size() == 1; }));
    StatusOr<transport::FitReply> ran = fit(decaying, 4);
    ASSERT_TRUE(ran.ok()) << ran.status();
    EXPECT_EQ(recorder.lr_decay.load(), 0.9);
  });
}

// An orchestrator played by hand (of another release, or hostile): it sends
// each silo that connects one task of `job_yaml` marked with `job_schema`, of
// `kind`, with a model of one tensor (or the empty model), and keeps how the
// silo answered.
class HandOrchestrator : public fedsilo::v1::Orchestrator::Service {
 public:
  HandOrchestrator(std::string job_yaml, uint32_t job_schema,
                   fedsilo::v1::TaskKind kind = fedsilo::v1::TASK_KIND_FIT, bool with_model = true)
      : job_yaml_(std::move(job_yaml)),
        job_schema_(job_schema),
        kind_(kind),
        with_model_(with_model) {}

  grpc::Status Connect(grpc::ServerContext*,
                       grpc::ServerReaderWriter<fedsilo::v1::OrchestratorMessage,
                                                fedsilo::v1::SiloMessage>* stream) override {
    fedsilo::v1::SiloMessage m;
    if (!stream->Read(&m) || !m.has_hello()) return grpc::Status::OK;
    fedsilo::v1::OrchestratorMessage task;
    fedsilo::v1::TaskHeader* t = task.mutable_task();
    t->set_job_id("job-1");
    t->set_round(1);
    t->set_nonce("nonce");
    t->set_job_yaml(job_yaml_);
    t->set_job_schema(job_schema_);  // 0: not set, as fedsilo 0.1 sent it
    t->set_kind(kind_);
    ModelState global;
    if (with_model_) global.Add(Tensor::FromFloats("w", {2}, {1, 2})).IgnoreError();
    const std::string model = SerializeModelState(global);
    t->set_model_bytes(model.size());
    fedsilo::v1::OrchestratorMessage chunk;
    chunk.mutable_chunk()->set_data(model);
    chunk.mutable_chunk()->set_last(true);
    if (!stream->Write(task) || !stream->Write(chunk)) return grpc::Status::OK;
    while (stream->Read(&m)) {
      if (m.has_failed() || m.has_result()) {
        MutexLock lock(&mu_);
        if (answer_.empty()) answer_ = m.has_failed() ? m.failed().reason() : "result";
        return grpc::Status::OK;
      }
    }
    return grpc::Status::OK;
  }
  // "result", a TaskFailed's reason, or "" before the silo answered.
  std::string Answer() {
    MutexLock lock(&mu_);
    return answer_;
  }

 private:
  const std::string job_yaml_;
  const uint32_t job_schema_;
  const fedsilo::v1::TaskKind kind_;
  const bool with_model_;
  Mutex mu_;
  std::string answer_ ABSL_GUARDED_BY(mu_);
};

// How a silo of this release answers one task from `orchestrator`; whether
// its handler was asked to train.
std::pair<std::string, bool> AnswerOf(HandOrchestrator& orchestrator, const std::string& kits,
                                      std::vector<int> job_schemas = {}) {
  auto server = transport::GrpcServer::Start(
      "127.0.0.1:0", transport::MakeServerCredentials(Files(kits + "/orchestrator")),
      {&orchestrator});
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return {"", false};
  class Handler : public transport::SiloHandler {
   public:
    StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& r) override {
      called = true;
      transport::FitReply out;
      if (const ModelState* model = transport::ModelOf(r.task)) out.update = *model;
      out.num_examples = 1;
      return out;
    }
    std::atomic<bool> called{false};
  } handler;
  transport::SiloClientOptions options;
  options.target = "localhost:" + std::to_string((*server)->port());
  options.datasets = {"digits"};
  options.initial_backoff = 100ms;
  options.job_schemas = std::move(job_schemas);
  transport::SiloClient silo(transport::MakeChannelCredentials(Files(kits + "/hospital-a")),
                             options, &handler);
  std::thread runner([&] { silo.Run().IgnoreError(); });
  WaitFor([&] { return !orchestrator.Answer().empty(); });
  silo.Stop();
  runner.join();
  return {orchestrator.Answer(), handler.called.load()};
}

// A silo told a job is in a schema it does not read (an orchestrator of a
// later release that ignored its hello) refuses the task and says why. One
// from fedsilo 0.1, which marks no schema, is read as schema 1: strictly.
TEST(FederationLinkTest, ASiloReadsATaskInTheJobSchemaItIsMarkedWithOrRefusesIt) {
  const std::string kits = Provision("other_release", std::chrono::system_clock::now());
  const std::string job = "data: {dataset: digits}\nfederation: {silos: [hospital-a]}\n";

  HandOrchestrator later(job, kJobSchemaVersion + 1);
  const auto [refused, trained_refused] = AnswerOf(later, kits);
  std::vector<int> reads;
  for (int s = kOldestJobSchemaVersion; s <= kJobSchemaVersion; ++s) reads.push_back(s);
  EXPECT_EQ(refused, absl::StrCat("the job is written in job schema ", kJobSchemaVersion + 1,
                                  ", and this silo (", FedsiloRelease(), ") reads job schema ",
                                  absl::StrJoin(reads, ", "), ": upgrade the silo"));
  EXPECT_FALSE(trained_refused);

  HandOrchestrator past(job, 0);
  const auto [ran, trained] = AnswerOf(past, kits);
  EXPECT_EQ(ran, "result");
  EXPECT_TRUE(trained);

  HandOrchestrator past_with_new_key(job + "training: {lr_decay: 0.5}\n", 0);
  const auto [unknown, trained_unknown] = AnswerOf(past_with_new_key, kits);
  EXPECT_THAT(unknown, HasSubstr("unknown key 'training.lr_decay'"));
  EXPECT_FALSE(trained_unknown);

  // A silo that no longer reads schema 1 names the orchestrator as the one
  // to upgrade.
  HandOrchestrator too_old(job, 0);
  const auto [outgrown, trained_outgrown] = AnswerOf(too_old, kits, {2});
  EXPECT_EQ(outgrown, absl::StrCat("the job is written in job schema 1 (an orchestrator of "
                                   "fedsilo 0.1), and this silo (",
                                   FedsiloRelease(),
                                   ") reads job schema 2: upgrade the "
                                   "orchestrator"));
  EXPECT_FALSE(trained_outgrown);
}

// A statistics task starts from no model. One that carries a model (what a
// hostile orchestrator could slip in, to have it kept in the silo's audit
// log as the empty one) is refused before the silo reads a row; the empty
// model, which every release sends, is answered.
TEST(FederationLinkTest, AStatisticsTaskThatCarriesAModelIsRefused) {
  const std::string kits = Provision("statistics_model", std::chrono::system_clock::now());
  const std::string job = "data: {dataset: digits}\nfederation: {silos: [hospital-a]}\n";

  HandOrchestrator hostile(job, kJobSchemaVersion, fedsilo::v1::TASK_KIND_STATISTICS);
  const auto [refused, asked] = AnswerOf(hostile, kits);
  EXPECT_EQ(refused, "a statistics task carries no model, but this one carried one");
  EXPECT_FALSE(asked);

  HandOrchestrator honest(job, kJobSchemaVersion, fedsilo::v1::TASK_KIND_STATISTICS,
                          /*with_model=*/false);
  const auto [answered, asked_honestly] = AnswerOf(honest, kits);
  EXPECT_EQ(answered, "result");
  EXPECT_TRUE(asked_honestly);
}

}  // namespace
}  // namespace fedsilo
