// Vertical jobs over a SiloConnection: each step of transport/vertical_party.h
// as a vertical.proto Request, and its Reply. RemoteVerticalParty is the
// orchestrator's handle on a party in a silo; AnswerVerticalRequest() is the
// silo's side, which hands the request to its party.
//
// Thread safety: as transport::VerticalParty.
#ifndef FEDSILO_TRANSPORT_VERTICAL_WIRE_H_
#define FEDSILO_TRANSPORT_VERTICAL_WIRE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/job_config.h"
#include "core/status.h"
#include "fedsilo/v1/vertical.pb.h"
#include "transport/silo_connection.h"
#include "transport/vertical_party.h"

namespace fedsilo::transport {

// The most a request may carry: a set of about two million ids.
inline constexpr size_t kMaxVerticalRequestBytes = size_t{64} << 20;

class RemoteVerticalParty : public VerticalParty {
 public:
  // The party `connection` reaches (not owned; outlives this), for the run
  // `run_id` of `job`.
  RemoteVerticalParty(SiloConnection* connection, const JobConfig& job, std::string run_id);

  // Opens the party's side of the run, sending it the job (and `torchscript`,
  // the job's module, unless empty): the silo checks it against its policy
  // and reads its table. Call first.
  Status Open(const std::string& torchscript = "");

  const std::string& name() const override { return connection_->silo_name(); }
  StatusOr<BlindedSet> BlindOwnIds(const std::string& domain) override;
  StatusOr<BlindedSet> Reblind(const BlindedSet& set) override;
  StatusOr<AlignedRows> Align(const std::vector<int64_t>& rows,
                              const BlindedSet& own_final) override;
  StatusOr<std::vector<float>> Forward(const RowSelection& rows) override;
  Status Backward(const std::vector<float>& gradient) override;
  Status BeginRound(int round) override;
  StatusOr<TopStepResult> TopStep(const RowSelection& rows,
                                  const std::vector<std::vector<float>>& cut_outputs) override;
  Status TopEvaluate(const RowSelection& rows,
                     const std::vector<std::vector<float>>& cut_outputs) override;
  StatusOr<RoundMetrics> EndRound() override;

 private:
  // Sends `request` and reads the reply, of at most `max_reply_bytes`; the
  // reply must be the answer `expected` (InvalidArgument naming the party
  // otherwise).
  StatusOr<fedsilo::v1::vertical::Reply> Call(const fedsilo::v1::vertical::Request& request,
                                              uint64_t max_reply_bytes,
                                              fedsilo::v1::vertical::Reply::AnswerCase expected,
                                              const JobConfig* job = nullptr);
  // The reply's bound for `values` floats.
  static uint64_t TensorBytes(size_t values);

  SiloConnection* connection_;
  JobConfig job_;
  std::string run_id_;
};

// The silo's side: parses `payload` (a vertical.proto Request) and, unless it
// opens the run (which the silo handles itself, see IsOpenRequest), answers it
// with `party`. InvalidArgument for a payload that does not parse.
StatusOr<fedsilo::v1::vertical::Request> ParseVerticalRequest(absl::string_view payload);
StatusOr<std::string> AnswerVerticalRequest(VerticalParty& party,
                                            const fedsilo::v1::vertical::Request& request);
// The reply to the request that opens a run.
std::string OpenedReply();

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_VERTICAL_WIRE_H_
