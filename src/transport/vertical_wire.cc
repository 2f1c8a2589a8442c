#include "transport/vertical_wire.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "secure/psi.h"

namespace fedsilo::transport {
namespace {

namespace pb = fedsilo::v1::vertical;

// Bounds for small replies (done, aligned counts, metrics).
constexpr uint64_t kSmallReplyBytes = 64 << 10;

void ToProto(const BlindedSet& set, pb::BlindedSet* out) {
  out->set_origin(set.origin);
  out->set_hops(set.hops);
  out->set_points(set.points);
  out->set_certificate(set.certificate);
  out->set_signature(set.signature);
}

BlindedSet FromProto(const pb::BlindedSet& set) {
  return {set.origin(), set.hops(), set.points(), set.certificate(), set.signature()};
}

void ToProto(const RowSelection& rows, pb::Rows* out) {
  out->set_test(rows.test);
  out->mutable_positions()->Add(rows.positions.begin(), rows.positions.end());
}

RowSelection FromProto(const pb::Rows& rows) {
  return {rows.test(), std::vector<int64_t>(rows.positions().begin(), rows.positions().end())};
}

void ToProto(const std::vector<float>& values, pb::Tensor* out) {
  out->mutable_values()->Add(values.begin(), values.end());
}

std::vector<float> FromProto(const pb::Tensor& tensor) {
  return std::vector<float>(tensor.values().begin(), tensor.values().end());
}

void ToProto(const RowSelection& rows, const std::vector<std::vector<float>>& cut_outputs,
             pb::CutOutputs* out) {
  ToProto(rows, out->mutable_rows());
  for (const std::vector<float>& o : cut_outputs) ToProto(o, out->add_outputs());
}

std::vector<std::vector<float>> OutputsOf(const pb::CutOutputs& step) {
  std::vector<std::vector<float>> outputs;
  for (const pb::Tensor& t : step.outputs()) outputs.push_back(FromProto(t));
  return outputs;
}

std::string Serialized(const pb::Reply& reply) {
  std::string bytes;
  reply.SerializeToString(&bytes);
  return bytes;
}

std::string DoneReply() {
  pb::Reply reply;
  reply.mutable_done();
  return Serialized(reply);
}

}  // namespace

RemoteVerticalParty::RemoteVerticalParty(SiloConnection* connection, const JobConfig& job,
                                         std::string run_id)
    : connection_(connection), job_(job), run_id_(std::move(run_id)) {}

uint64_t RemoteVerticalParty::TensorBytes(size_t values) {
  // Packed floats, and the fields around them.
  return 4 * static_cast<uint64_t>(values) + 1024;
}

StatusOr<pb::Reply> RemoteVerticalParty::Call(const pb::Request& request, uint64_t max_reply_bytes,
                                              pb::Reply::AnswerCase expected,
                                              const JobConfig* job) {
  VerticalStepRequest step;
  step.run_id = run_id_;
  step.job = job;
  step.max_reply_bytes = max_reply_bytes;
  if (!request.SerializeToString(&step.payload)) {
    return absl::InternalError("a vertical step did not serialise");
  }
  // The step that opens a run may carry the job's module beside it.
  const size_t module_bytes = request.has_open() ? request.open().torchscript().size() : 0;
  if (step.payload.size() > kMaxVerticalRequestBytes + module_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a vertical step to party '", name(), "' would carry ",
                     step.payload.size() >> 20, " MiB; a step carries at most ",
                     kMaxVerticalRequestBytes >> 20, " MiB (about two million ids per party)"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string bytes, connection_->VerticalStep(step));
  pb::Reply reply;
  if (!reply.ParseFromString(bytes) || reply.answer_case() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("party '", name(), "' answered a vertical step with something else"));
  }
  return reply;
}

Status RemoteVerticalParty::Open(const std::string& torchscript) {
  pb::Request request;
  request.mutable_open()->set_torchscript(torchscript);
  return Call(request, kSmallReplyBytes, pb::Reply::kDone, &job_).status();
}

StatusOr<BlindedSet> RemoteVerticalParty::BlindOwnIds(const std::string& domain) {
  pb::Request request;
  request.mutable_blind_own()->set_domain(domain);
  FEDSILO_ASSIGN_OR_RETURN(pb::Reply reply,
                           Call(request, kMaxVerticalRequestBytes, pb::Reply::kBlinded));
  return FromProto(reply.blinded());
}

StatusOr<BlindedSet> RemoteVerticalParty::Reblind(const BlindedSet& set) {
  pb::Request request;
  ToProto(set, request.mutable_reblind());
  // As many points as it was sent, and a signature.
  FEDSILO_ASSIGN_OR_RETURN(
      pb::Reply reply, Call(request, set.points.size() + kSmallReplyBytes, pb::Reply::kBlinded));
  return FromProto(reply.blinded());
}

StatusOr<AlignedRows> RemoteVerticalParty::Align(const std::vector<int64_t>& rows,
                                                 const BlindedSet& own_final) {
  pb::Request request;
  request.mutable_align()->mutable_rows()->Add(rows.begin(), rows.end());
  ToProto(own_final, request.mutable_align()->mutable_own_final());
  FEDSILO_ASSIGN_OR_RETURN(pb::Reply reply, Call(request, kSmallReplyBytes, pb::Reply::kAligned));
  return AlignedRows{reply.aligned().train(), reply.aligned().test(),
                     reply.aligned().order_digest()};
}

StatusOr<std::vector<float>> RemoteVerticalParty::Forward(const RowSelection& rows) {
  pb::Request request;
  ToProto(rows, request.mutable_forward());
  FEDSILO_ASSIGN_OR_RETURN(
      pb::Reply reply,
      Call(request,
           TensorBytes(rows.positions.size() * static_cast<size_t>(job_.vertical.cut_width)),
           pb::Reply::kOutputs));
  return FromProto(reply.outputs());
}

Status RemoteVerticalParty::Backward(const std::vector<float>& gradient) {
  pb::Request request;
  ToProto(gradient, request.mutable_backward());
  return Call(request, kSmallReplyBytes, pb::Reply::kDone).status();
}

Status RemoteVerticalParty::BeginRound(int round) {
  pb::Request request;
  request.mutable_begin_round()->set_round(round);
  return Call(request, kSmallReplyBytes, pb::Reply::kDone).status();
}

StatusOr<TopStepResult> RemoteVerticalParty::TopStep(
    const RowSelection& rows, const std::vector<std::vector<float>>& cut_outputs) {
  pb::Request request;
  ToProto(rows, cut_outputs, request.mutable_top_step());
  size_t values = 0;
  for (const std::vector<float>& o : cut_outputs) values += o.size();
  FEDSILO_ASSIGN_OR_RETURN(
      pb::Reply reply,
      Call(request, TensorBytes(values) + 64 * cut_outputs.size(), pb::Reply::kGradients));
  TopStepResult result;
  for (const pb::Tensor& g : reply.gradients().gradients()) {
    result.gradients.push_back(FromProto(g));
  }
  return result;
}

Status RemoteVerticalParty::TopEvaluate(const RowSelection& rows,
                                        const std::vector<std::vector<float>>& cut_outputs) {
  pb::Request request;
  ToProto(rows, cut_outputs, request.mutable_top_evaluate());
  return Call(request, kSmallReplyBytes, pb::Reply::kDone).status();
}

StatusOr<RoundMetrics> RemoteVerticalParty::EndRound() {
  pb::Request request;
  request.mutable_end_round();
  FEDSILO_ASSIGN_OR_RETURN(pb::Reply reply, Call(request, kSmallReplyBytes, pb::Reply::kMetrics));
  RoundMetrics metrics;
  metrics.train_loss = reply.metrics().train_loss();
  metrics.test.insert(reply.metrics().test().begin(), reply.metrics().test().end());
  return metrics;
}

StatusOr<pb::Request> ParseVerticalRequest(absl::string_view payload) {
  pb::Request request;
  if (!request.ParseFromString(std::string(payload)) ||
      request.step_case() == pb::Request::STEP_NOT_SET) {
    return absl::InvalidArgumentError("a vertical step that does not parse");
  }
  return request;
}

std::string OpenedReply() { return DoneReply(); }

StatusOr<std::string> AnswerVerticalRequest(VerticalParty& party, const pb::Request& request) {
  pb::Reply reply;
  switch (request.step_case()) {
    case pb::Request::kBlindOwn: {
      FEDSILO_ASSIGN_OR_RETURN(BlindedSet set, party.BlindOwnIds(request.blind_own().domain()));
      ToProto(set, reply.mutable_blinded());
      break;
    }
    case pb::Request::kReblind: {
      FEDSILO_ASSIGN_OR_RETURN(BlindedSet set, party.Reblind(FromProto(request.reblind())));
      ToProto(set, reply.mutable_blinded());
      break;
    }
    case pb::Request::kAlign: {
      FEDSILO_ASSIGN_OR_RETURN(AlignedRows rows,
                               party.Align(std::vector<int64_t>(request.align().rows().begin(),
                                                                request.align().rows().end()),
                                           FromProto(request.align().own_final())));
      reply.mutable_aligned()->set_train(rows.train);
      reply.mutable_aligned()->set_test(rows.test);
      reply.mutable_aligned()->set_order_digest(rows.order_digest);
      break;
    }
    case pb::Request::kForward: {
      FEDSILO_ASSIGN_OR_RETURN(std::vector<float> outputs,
                               party.Forward(FromProto(request.forward())));
      ToProto(outputs, reply.mutable_outputs());
      break;
    }
    case pb::Request::kBackward:
      FEDSILO_RETURN_IF_ERROR(party.Backward(FromProto(request.backward())));
      return DoneReply();
    case pb::Request::kBeginRound:
      FEDSILO_RETURN_IF_ERROR(party.BeginRound(request.begin_round().round()));
      return DoneReply();
    case pb::Request::kTopStep: {
      FEDSILO_ASSIGN_OR_RETURN(
          TopStepResult result,
          party.TopStep(FromProto(request.top_step().rows()), OutputsOf(request.top_step())));
      for (const std::vector<float>& g : result.gradients) {
        ToProto(g, reply.mutable_gradients()->add_gradients());
      }
      break;
    }
    case pb::Request::kTopEvaluate:
      FEDSILO_RETURN_IF_ERROR(party.TopEvaluate(FromProto(request.top_evaluate().rows()),
                                                OutputsOf(request.top_evaluate())));
      return DoneReply();
    case pb::Request::kEndRound: {
      FEDSILO_ASSIGN_OR_RETURN(RoundMetrics metrics, party.EndRound());
      reply.mutable_metrics()->set_train_loss(metrics.train_loss);
      reply.mutable_metrics()->mutable_test()->insert(metrics.test.begin(), metrics.test.end());
      break;
    }
    case pb::Request::kOpen:
    case pb::Request::STEP_NOT_SET:
      return absl::InvalidArgumentError("not a step a party answers");
  }
  return Serialized(reply);
}

}  // namespace fedsilo::transport
