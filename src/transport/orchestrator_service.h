// The orchestrator's gRPC endpoint (proto/fedsilo/v1/federation.proto):
// WhoAmI for any participant, and the Connect stream that silos keep open.
// Every call is authenticated from the caller's verified certificate.
//
// Thread safety: gRPC calls the service from many threads; the service keeps
// no mutable state itself and reports sessions to a SiloSessionListener,
// which must be thread-safe.
#ifndef FEDSILO_TRANSPORT_ORCHESTRATOR_SERVICE_H_
#define FEDSILO_TRANSPORT_ORCHESTRATOR_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "core/status.h"
#include "fedsilo/v1/federation.grpc.pb.h"
#include "secure/audit_log.h"
#include "transport/silo_connection.h"
#include "transport/tls.h"

namespace fedsilo::transport {

// Told about silo sessions on Connect streams. A silo that reconnects gets a
// new session id; events of an older session may arrive after the new one
// started and must not undo it.
class SiloSessionListener {
 public:
  virtual ~SiloSessionListener() = default;
  virtual void OnConnected(const std::string& silo, uint64_t session,
                           const std::vector<std::string>& datasets) = 0;
  virtual void OnHeartbeat(const std::string& silo, uint64_t session) = 0;
  virtual void OnDisconnected(const std::string& silo, uint64_t session, const Status& why) = 0;
};

class OrchestratorService final : public fedsilo::v1::Orchestrator::Service {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  // `listener` must outlive the service. `clock` gives the time certificates
  // are checked at (the system clock in production). `insecure` takes
  // identities from call metadata instead (see PeerAuthenticator).
  OrchestratorService(std::string ca_pem, SiloSessionListener* listener, Clock clock,
                      bool insecure = false);
  ~OrchestratorService() override;

  // Certificates revoked by the federation operator: refused at every call,
  // and an open stream is closed at its next message, before a task goes to
  // it, and by a sweep of every stream (a silo that stays silent). Expired
  // certificates are treated alike. Call before serving.
  void SetRevocationList(std::shared_ptr<const secure::RevocationList> revoked) {
    auth_.revoked = std::move(revoked);
  }
  // How often every open stream's certificate is checked again (default 20 s).
  void set_validity_sweep(std::chrono::milliseconds every);
  // Silos' signed audit log heads (secure::SignedAuditHead) go to `sink`
  // once `checker` (the federation's CA) verified them for the silo whose
  // stream they came on; a head that does not verify breaks the protocol and
  // closes the stream. Without a sink, heads are ignored. Call before serving.
  void SetAuditHeadSink(std::shared_ptr<const secure::SignatureChecker> checker,
                        std::function<void(const secure::SignedAuditHead&)> sink) {
    audit_head_checker_ = std::move(checker);
    audit_head_sink_ = std::move(sink);
  }
  // Asks every connected silo for its audit log head (at the end of a job).
  void RequestAuditHeads(const std::string& job_id);

  grpc::Status WhoAmI(grpc::ServerContext* context, const fedsilo::v1::WhoAmIRequest* request,
                      fedsilo::v1::WhoAmIReply* reply) override;
  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<fedsilo::v1::OrchestratorMessage,
                                                fedsilo::v1::SiloMessage>* stream) override;

  // Sends a task to a connected silo and waits for its result header, which
  // must echo the task's job id, round and nonce (otherwise it is rejected
  // and logged). The update stays with the silo: the reply's `source` pulls
  // it when the orchestrator is ready to fold it, so one update at a time is
  // in transit. Unavailable if the silo is not connected or drops the stream,
  // DeadlineExceeded after `timeout` (for the result, and again for the
  // upload). One task at a time per silo, until its update is fetched or the
  // reply dropped.
  StatusOr<FitReply> RunTask(const std::string& silo, const TaskRequest& request,
                             std::chrono::milliseconds timeout);

  // Sends one secure-aggregation stage to a connected silo and waits for its
  // reply payload (which must echo the step's nonce). Errors as for RunTask().
  // REQUIRES: no task of this silo is out (its task reply was dropped).
  StatusOr<std::string> SecureStep(const std::string& silo, const SecureStepRequest& request,
                                   std::chrono::milliseconds timeout);

  // Sends one step of a vertical job to a connected silo (protocol 2) and
  // waits for its reply payload, like SecureStep(). FailedPrecondition,
  // naming the silo and the release to upgrade to, for a silo that speaks
  // protocol 1; the step that opens the run carries the job in the schema the
  // silo reads.
  StatusOr<std::string> VerticalStep(const std::string& silo, const VerticalStepRequest& request,
                                     std::chrono::milliseconds timeout);

  // Names of the silos with an open session.
  std::vector<std::string> ConnectedSilos() const;
  bool IsConnected(const std::string& silo) const;

  // Bytes of protocol messages sent to and received from silos so far.
  uint64_t BytesSent() const { return bytes_sent_.load(); }
  uint64_t BytesReceived() const { return bytes_received_.load(); }

  // Ends every task of `run_id` that is out: waiting RunTask() calls and update
  // fetches return Cancelled with `reason`, and the silos are sent an Abort.
  void CancelRun(const std::string& run_id, const std::string& reason);

 private:
  struct Session;
  class RemoteUpdate;
  class SiloStream;
  using SiloStreamIo =
      grpc::ServerReaderWriter<fedsilo::v1::OrchestratorMessage, fedsilo::v1::SiloMessage>;
  // Reads the stream's hello, agrees on versions and opens the silo's session
  // (replacing an older one of the same silo). OK with `opened` unset: the
  // stream closed before its hello.
  grpc::Status OpenSession(grpc::ServerContext* context, SiloStreamIo* stream,
                           const secure::PeerIdentity& peer, const std::string& address,
                           std::shared_ptr<Session>& opened);
  // Ends the session after its stream ended with `why` (OK: it just closed),
  // and what Connect() returns.
  grpc::Status CloseSession(const std::shared_ptr<Session>& session, grpc::ServerContext& context,
                            const std::string& address, Status why);
  void Deliver(Session& session, StatusOr<FitReply> result);
  // The open, idle session of `silo`, marked busy with a fresh nonce for a
  // task (or, with `securing`, a secure-aggregation step) of run_id/round.
  StatusOr<std::shared_ptr<Session>> Claim(const std::string& silo, const std::string& run_id,
                                           int round, bool securing);
  // Sends a secure-aggregation or vertical step (`message`, its nonce set
  // here) on `session` (Claim()ed for it) and waits for its reply of at most
  // `max_reply_bytes` (0: twice the largest model sent, and a little).
  StatusOr<std::string> Step(Session& session, fedsilo::v1::OrchestratorMessage message,
                             uint64_t max_reply_bytes, std::chrono::milliseconds timeout);
  // The .fsm bytes of the request's global model, serialised once per round
  // and shared by every silo's send.
  std::shared_ptr<const std::string> ModelBytes(const TaskRequest& request);
  // Closes `session`'s stream, which ends with `why` (a certificate that is
  // no longer valid).
  static void Drop(Session& session, const Status& why);
  // The open sessions, taken under mu_ (so that each can be locked without it).
  std::vector<std::shared_ptr<Session>> Sessions() const;
  // Drops the sessions whose certificate is no longer valid, every sweep_.
  void SweepLoop();

  PeerAuthenticator auth_;
  SiloSessionListener* listener_;
  std::shared_ptr<const secure::SignatureChecker> audit_head_checker_;  // set before serving
  std::function<void(const secure::SignedAuditHead&)> audit_head_sink_;
  std::atomic<uint64_t> next_session_{1};
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);

  Mutex model_mu_;
  const ModelState* model_key_ ABSL_GUARDED_BY(model_mu_) = nullptr;
  std::string model_key_run_ ABSL_GUARDED_BY(model_mu_);
  int model_key_round_ ABSL_GUARDED_BY(model_mu_) = 0;
  TaskKind model_key_task_ ABSL_GUARDED_BY(model_mu_) = TaskKind::kFit;
  std::shared_ptr<const std::string> model_bytes_ ABSL_GUARDED_BY(model_mu_);

  Mutex sweep_mu_;
  CondVar sweep_cv_;
  std::chrono::milliseconds sweep_ ABSL_GUARDED_BY(sweep_mu_){20000};
  bool stopping_ ABSL_GUARDED_BY(sweep_mu_) = false;
  std::thread sweeper_;  // last: started once the rest is built
};

// A SiloConnection to a silo process connected to `service`.
class RemoteSiloConnection : public SiloConnection {
 public:
  RemoteSiloConnection(std::string silo_name, OrchestratorService* service,
                       std::chrono::milliseconds timeout)
      : silo_name_(std::move(silo_name)), service_(service), timeout_(timeout) {}
  const std::string& silo_name() const override { return silo_name_; }
  StatusOr<FitReply> RunTask(const TaskRequest& request) override {
    return service_->RunTask(silo_name_, request, timeout_);
  }
  StatusOr<std::string> SecureStep(const SecureStepRequest& request) override {
    return service_->SecureStep(silo_name_, request, timeout_);
  }
  StatusOr<std::string> VerticalStep(const VerticalStepRequest& request) override {
    return service_->VerticalStep(silo_name_, request, timeout_);
  }
  bool Reachable() const override { return service_->IsConnected(silo_name_); }

 private:
  std::string silo_name_;
  OrchestratorService* service_;
  std::chrono::milliseconds timeout_;
};

// The limits and keepalive settings of every fedsilo server (GrpcServer
// applies them; the fuzz targets serve in process with the same).
void ApplyServerLimits(grpc::ServerBuilder& builder);

// A running gRPC server. Shut down (waiting for calls to end) on destruction.
class GrpcServer {
 public:
  // Binds `address` (e.g. "127.0.0.1:0"; port 0 lets the OS choose) and
  // serves `services`, which must outlive the server. Unavailable if the
  // address cannot be bound.
  static StatusOr<std::unique_ptr<GrpcServer>> Start(
      const std::string& address, std::shared_ptr<grpc::ServerCredentials> credentials,
      const std::vector<grpc::Service*>& services);
  ~GrpcServer();

  int port() const { return port_; }
  // Ends every open stream and stops serving; idempotent.
  void Shutdown();

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, int port)
      : server_(std::move(server)), port_(port) {}
  std::unique_ptr<grpc::Server> server_;
  int port_;
  bool shut_down_ = false;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_ORCHESTRATOR_SERVICE_H_
