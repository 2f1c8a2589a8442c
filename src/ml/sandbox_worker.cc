// The sandbox's worker: `fedsilo sandbox-worker` (ml/sandbox.h).
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/model_state_file.h"
#include "ml/model.h"
#include "ml/sandbox.h"
#include "ml/sandbox_protocol.h"
#include "ml/split_model.h"
#include "ml/torchscript_check.h"

namespace fedsilo::ml {
namespace {

using sandbox::Kind;
using sandbox::Reader;
using sandbox::Writer;

constexpr int kSocket = 3;
constexpr uint64_t kMaxRequest = uint64_t{8} << 30;

class Worker {
 public:
  // Answers one request; false when the host is gone.
  bool Serve(const sandbox::Frame& request) {
    StatusOr<std::string> reply = Handle(request);
    if (!reply.ok() && refused_.has_value()) {
      Writer w;
      w.Bytes(refused_->op).Bytes(refused_->method);
      refused_.reset();
      return sandbox::WriteFrame(kSocket, Kind::kRefused, w.str(), "the host").ok();
    }
    if (!reply.ok()) {
      Writer w;
      w.U32(static_cast<uint32_t>(reply.status().code()))
          .Bytes(std::string(reply.status().message()));
      return sandbox::WriteFrame(kSocket, Kind::kError, w.str(), "the host").ok();
    }
    return sandbox::WriteFrame(kSocket, Kind::kOk, *reply, "the host").ok();
  }

 private:
  StatusOr<std::string> Handle(const sandbox::Frame& request) {
    Reader r(request.payload);
    const auto malformed = [] { return absl::InvalidArgumentError("a malformed request"); };
    if (request.kind == Kind::kSplitLoad || request.kind == Kind::kSplitForward ||
        request.kind == Kind::kSplitBackward || request.kind == Kind::kSplitRate ||
        (stack_ != nullptr &&
         (request.kind == Kind::kSetState || request.kind == Kind::kGetState))) {
      return HandleSplit(request, r);
    }
    if (request.kind != Kind::kLoad && request.kind != Kind::kData && model_ == nullptr) {
      return absl::FailedPreconditionError("no module loaded");
    }
    switch (request.kind) {
      case Kind::kLoad: {
        const std::string bytes = r.Bytes();
        ModelSpec spec;
        spec.config.kind = ModelKind::kTorchScript;
        spec.input_shape = r.I64s();
        spec.num_classes = static_cast<int>(r.I64());
        const bool check_ops = r.U32() != 0;
        if (!r.done()) return malformed();
        std::vector<RefusedOp> refused;
        StatusOr<std::unique_ptr<Model>> model =
            Model::LoadTorchScriptHere(bytes, spec, check_ops, &refused);
        if (!refused.empty()) {
          refused_ = refused.front();
          return absl::InvalidArgumentError("refused");
        }
        if (!model.ok()) return model.status();
        model_ = std::move(model).value();
        Writer w;
        w.Bytes(SerializeModelState(model_->GetState()))
            .I64(model_->num_parameters())
            .I64(model_->num_buffers());
        return std::move(w.str());
      }
      case Kind::kData: {
        const uint64_t id = r.U64();
        auto d = std::make_shared<Dataset>();
        d->example_shape = r.I64s();
        d->num_classes = static_cast<int>(r.I64());
        d->labels = r.I64s();
        const uint32_t bytes = r.U32();
        if (bytes != 0) {
          d->byte_scale = static_cast<float>(r.F64());
          const std::string raw = r.Bytes();
          d->byte_features =
              std::make_shared<ByteStore>(std::vector<uint8_t>(raw.begin(), raw.end()));
        } else {
          d->features = r.Floats();
        }
        if (!r.done() || d->num_classes < 1) return malformed();
        const int64_t size = d->has_byte_features() ? static_cast<int64_t>(d->byte_features->size())
                                                    : static_cast<int64_t>(d->features.size());
        if (size != d->size() * d->feature_size()) return malformed();
        for (int64_t l : d->labels) {
          if (l < 0 || l >= d->num_classes) return malformed();
        }
        datasets_[id] = std::move(d);
        return std::string();
      }
      case Kind::kSetState: {
        FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(request.payload, "the host"));
        FEDSILO_RETURN_IF_ERROR(model_->SetState(file.state));
        return std::string();
      }
      case Kind::kGetState:
        return SerializeModelState(model_->GetState());
      case Kind::kTrain: {
        FEDSILO_RETURN_IF_ERROR(SetStateFrom(r.Bytes()));
        FEDSILO_ASSIGN_OR_RETURN(DataView view, View(r));
        TrainingConfig config;
        config.local_epochs = static_cast<int>(r.I64());
        config.batch_size = static_cast<int>(r.I64());
        config.optimizer = static_cast<OptimizerKind>(r.U32());
        config.learning_rate = r.F64();
        config.momentum = r.F64();
        config.weight_decay = r.F64();
        const uint64_t seed = r.U64();
        LocalObjective objective;
        objective.proximal_mu = r.F64();
        const std::string correction = r.Bytes();
        if (!r.done()) return malformed();
        ModelState correction_state;
        if (!correction.empty()) {
          FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(correction, "the host"));
          correction_state = std::move(file.state);
          objective.gradient_correction = &correction_state;
        }
        FEDSILO_ASSIGN_OR_RETURN(TrainStats stats,
                                 model_->Train(view, config, seed, nullptr, objective));
        Writer w;
        w.I64(stats.examples).I64(stats.steps).F64(stats.loss).F64(stats.accuracy);
        w.Bytes(SerializeModelState(model_->GetState()));
        return std::move(w.str());
      }
      case Kind::kPredict: {
        FEDSILO_RETURN_IF_ERROR(SetStateFrom(r.Bytes()));
        FEDSILO_ASSIGN_OR_RETURN(DataView view, View(r));
        if (!r.done()) return malformed();
        FEDSILO_ASSIGN_OR_RETURN(std::vector<float> logp, model_->PredictLogProbabilities(view));
        Writer w;
        w.Floats(logp.data(), logp.size());
        return std::move(w.str());
      }
      case Kind::kSave:
        return model_->SaveTorchScriptBytes();
      default:
        return malformed();
    }
  }

  // A vertical job's bottom model: one submodule of the module, trained
  // step by step.
  StatusOr<std::string> HandleSplit(const sandbox::Frame& request, Reader& r) {
    const Kind kind = request.kind;
    const auto malformed = [] { return absl::InvalidArgumentError("a malformed request"); };
    if (kind == Kind::kSplitLoad) {
      if (model_ != nullptr || stack_ != nullptr) {
        return absl::FailedPreconditionError("a module is loaded already");
      }
      const std::string bytes = r.Bytes();
      const std::string submodule = r.Bytes();
      LayerStack::Options options;
      options.inputs = r.I64();
      options.outputs = r.I64();
      TrainingConfig training;
      training.optimizer = static_cast<OptimizerKind>(r.U32());
      training.learning_rate = r.F64();
      training.momentum = r.F64();
      training.weight_decay = r.F64();
      const bool check_ops = r.U32() != 0;
      if (!r.done() || options.inputs < 1 || options.outputs < 1) return malformed();
      std::vector<RefusedOp> refused;
      ScriptedMisfit misfit;
      StatusOr<std::unique_ptr<LayerStack>> stack = LayerStack::LoadTorchScriptHere(
          bytes, submodule, options, training, check_ops, &refused, &misfit);
      if (!refused.empty()) {
        refused_ = refused.front();
        return absl::InvalidArgumentError("refused");
      }
      Writer w;
      w.U32(static_cast<uint32_t>(misfit.problem)).I64s(misfit.output_shape);
      if (misfit.problem != ScriptedMisfit::kFits) {
        w.Bytes("").I64(0);
        return std::move(w.str());
      }
      if (!stack.ok()) return stack.status();
      stack_ = std::move(stack).value();
      w.Bytes(SerializeModelState(stack_->GetState())).I64(stack_->num_parameters());
      return std::move(w.str());
    }
    if (stack_ == nullptr) return absl::FailedPreconditionError("no bottom model loaded");
    switch (kind) {
      case Kind::kSplitForward: {
        const int64_t rows = r.I64();
        const bool train = r.U32() != 0;
        const std::vector<float> x = r.Floats();
        if (!r.done()) return malformed();
        FEDSILO_ASSIGN_OR_RETURN(std::vector<float> out, stack_->Forward(x, rows, train));
        Writer w;
        w.Floats(out.data(), out.size());
        return std::move(w.str());
      }
      case Kind::kSplitBackward: {
        const std::vector<float> gradient = r.Floats();
        if (!r.done()) return malformed();
        FEDSILO_ASSIGN_OR_RETURN(std::vector<float> back, stack_->Backward(gradient));
        Writer w;
        w.Floats(back.data(), back.size());
        return std::move(w.str());
      }
      case Kind::kSplitRate: {
        const double rate = r.F64();
        if (!r.done()) return malformed();
        FEDSILO_RETURN_IF_ERROR(stack_->SetLearningRate(rate));
        return std::string();
      }
      case Kind::kSetState: {
        FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(request.payload, "the host"));
        FEDSILO_RETURN_IF_ERROR(stack_->SetState(file.state));
        return std::string();
      }
      case Kind::kGetState:
        return SerializeModelState(stack_->GetState());
      default:
        return malformed();
    }
  }

  // The weights a request carries ("": keep the current ones).
  Status SetStateFrom(const std::string& bytes) {
    if (bytes.empty()) return absl::OkStatus();
    FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(bytes, "the host"));
    return model_->SetState(file.state);
  }

  // A data set sent before, and the indices of the examples asked for.
  StatusOr<DataView> View(Reader& r) {
    const uint64_t id = r.U64();
    auto it = datasets_.find(id);
    if (!r.ok() || it == datasets_.end()) {
      return absl::InvalidArgumentError("a request for a data set not sent");
    }
    DataView view;
    view.dataset = it->second;
    view.indices = r.I64s();
    for (int64_t i : view.indices) {
      if (i < 0 || i >= it->second->size()) {
        return absl::InvalidArgumentError("an example index out of range");
      }
    }
    return view;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<LayerStack> stack_;  // or a vertical job's bottom model
  std::map<uint64_t, std::shared_ptr<const Dataset>> datasets_;
  std::optional<RefusedOp> refused_;
};

}  // namespace

int RunSandboxWorker() {
  // No core dumps (they would be files the filter cannot stop), no tracing
  // by its own user, and gone when the host is.
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::getppid() == 1) return 1;  // the host died before we could ask
  // Nothing inherited but the socket.
  ::syscall(SYS_close_range, kSocket + 1, ~0U, 0);
  // Everything libtorch sets up lazily (CPU features, BLAS, the allocator,
  // the JIT) happens now, while files may still be read.
  Status warm = WarmUpLibtorch();
  Status filtered = warm.ok() ? InstallSandboxFilter() : warm;
  if (!filtered.ok()) {
    // Said to the host, which reads it as the answer to its first request.
    Writer w;
    w.U32(static_cast<uint32_t>(absl::StatusCode::kInternal))
        .Bytes(absl::StrCat("the sandbox could not start: ", filtered.message()));
    (void)sandbox::WriteFrame(kSocket, Kind::kError, w.str(), "the host");
    return 1;
  }
  Worker worker;
  for (;;) {
    StatusOr<sandbox::Frame> request = sandbox::ReadFrame(
        kSocket, kMaxRequest, std::chrono::steady_clock::time_point::max(), "the host");
    if (!request.ok()) return 0;  // the host closed the socket: done
    if (!worker.Serve(*request)) return 0;
  }
}

}  // namespace fedsilo::ml
