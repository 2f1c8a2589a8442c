// SiloClient: the silo agent's side of the Connect stream. It dials out to
// the orchestrator (silos need no inbound port), says hello with the dataset
// names it offers, sends a heartbeat every `heartbeat_interval`, and when the
// connection breaks reconnects with exponential backoff (with equal jitter,
// see ReconnectBackoff) until Stop() is called.
//
// Thread safety: Run() on one thread; Stop() and the accessors from any.
#ifndef FEDSILO_TRANSPORT_SILO_CLIENT_H_
#define FEDSILO_TRANSPORT_SILO_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/mutex.h"
#include "core/status.h"
#include "fedsilo/v1/federation.grpc.pb.h"
#include "transport/silo_connection.h"
#include "transport/tls_diagnosis.h"

namespace fedsilo::transport {

struct SiloClientOptions {
  std::string target;                 // "host:port" of the orchestrator
  std::vector<std::string> datasets;  // names only; paths never leave the silo
  std::chrono::milliseconds heartbeat_interval{5000};
  // Reconnect waits (ReconnectBackoff): drawn from [b/2, b], b doubling from
  // initial_backoff up to max_backoff, and back to initial once connected.
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{10000};
  // Set only with plaintext credentials (--insecure): the name this silo
  // claims, since there is no certificate to read it from.
  std::string insecure_name;
  // Says why a session could not be opened (DiagnoseConnection); without it
  // every failure is retried. A certificate or protocol problem found
  // `max_certificate_failures` times in a row, the same each time, ends Run()
  // with InvalidArgument: retrying would not help.
  std::function<ConnectionDiagnosis()> diagnose;
  int max_certificate_failures = 3;
  // The silo's signed audit log head to send, if any: asked with
  // `requested` true when the session opens and when the orchestrator asks
  // (at the end of each job), false after each task (send one only if due).
  // Called on the session's reading thread.
  std::function<std::optional<fedsilo::v1::AuditHead>(bool requested)> audit_head;
  // The job schemas this silo says it reads, ascending; empty: every one
  // this build reads. (A test plays an older silo with {1}.)
  std::vector<int> job_schemas;
};

class SiloClient {
 public:
  // Tasks from the orchestrator go to `handler` (not owned; may be null, in
  // which case every task is answered with TaskFailed).
  SiloClient(std::shared_ptr<grpc::ChannelCredentials> credentials, SiloClientOptions options,
             SiloHandler* handler = nullptr);
  ~SiloClient();

  // Keeps a session open, reconnecting as needed, until Stop(). Returns the
  // reason of the last failed session (OK when stopped while connected).
  Status Run();
  void Stop();

  // The orchestrator's view of this silo's certificate; `timeout` bounds the call.
  StatusOr<fedsilo::v1::WhoAmIReply> WhoAmI(std::chrono::milliseconds timeout);

  // Sessions opened so far (a reconnect opens a new one).
  int sessions() const { return sessions_.load(); }
  bool connected() const { return connected_.load(); }

 private:
  // One session: hello, heartbeats, read until the stream ends.
  Status RunSession();
  // Runs one task and writes its result header (or TaskFailed) with `write`;
  // the update waits in pending_update_ for the orchestrator's UploadRequest.
  bool AnswerTask(const fedsilo::v1::TaskHeader& task, std::string model_bytes,
                  const std::function<bool(const fedsilo::v1::SiloMessage&)>& write);
  // Answers one secure-aggregation step with a SecureReply and its payload in
  // chunks (or TaskFailed).
  bool AnswerSecureStep(const fedsilo::v1::SecureStep& step,
                        const std::function<bool(const fedsilo::v1::SiloMessage&)>& write);
  // Answers one step of a vertical job likewise.
  bool AnswerVerticalStep(const fedsilo::v1::VerticalStep& step,
                          const std::function<bool(const fedsilo::v1::SiloMessage&)>& write);
  // The job schema a task's job is written in (0: fedsilo 0.1's, 1), or
  // FailedPrecondition when this silo does not read it, naming what to upgrade.
  StatusOr<int> ReadableSchema(uint32_t job_schema) const;
  // Sleeps up to `d`; returns early (false) when stopping.
  bool SleepUnlessStopped(std::chrono::milliseconds d);
  // A stub on a fresh channel. Each session gets its own: a channel that
  // failed keeps failing calls from its cached state for a while, however
  // short its reconnect backoff, which would hold back a silo from an
  // orchestrator that is back.
  std::unique_ptr<fedsilo::v1::Orchestrator::Stub> NewStub() const;

  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  SiloClientOptions options_;
  SiloHandler* handler_;
  // The update of the last result, kept until the orchestrator asks for it.
  // Used by the session's reading thread only.
  std::string pending_nonce_;
  std::string pending_update_;
  std::atomic<int> sessions_{0};
  std::atomic<bool> connected_{false};

  Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_SILO_CLIENT_H_
