// The sandbox: where a job's TorchScript module runs. A module is untrusted
// code (any data scientist may submit one), so it never runs in the process
// that holds a silo's identity, policy, ledger and connection, nor in the
// orchestrator's. Model::Create (ml/model.h) starts a worker process for it
// -- this program again, as `fedsilo sandbox-worker` -- that:
//   - starts with an empty environment, in an empty private folder of its
//     own, with no file descriptor but its socket to the host;
//   - warms libtorch up, then installs a seccomp filter (libseccomp) that
//     refuses opening or creating files, sockets, exec, new processes,
//     ptrace and the like for the rest of its life (threads may start);
//   - only then reads the module's bytes from the socket, loads them
//     (torch::jit::load from memory), checks every operation its methods use
//     (ml/torchscript_check.h) and serves the host: data sets, weights in and
//     out, training, prediction, saving -- tensors only.
// The worker's death, a timeout or a malformed reply is that call's failure,
// never the host's; the worker dies with its host.
//
// Thread safety: a SandboxSession serves one thread at a time.
#ifndef FEDSILO_ML_SANDBOX_H_
#define FEDSILO_ML_SANDBOX_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"
#include "ml/dataset.h"
#include "ml/split_model.h"

namespace fedsilo::ml {

struct TrainStats;
struct LocalObjective;

struct Sandbox {
  // The program whose `sandbox-worker` command serves modules: the fedsilo
  // binary.
  std::string program;
  // Tests only: false lets a module that the op check would refuse reach the
  // system-call filter, to show that the filter stops it too.
  bool check_ops = true;
  // A call to the worker that takes longer fails, and the worker is killed.
  std::chrono::seconds timeout{3600};

  // This program (/proc/self/exe), as the CLI runs it.
  static Sandbox ThisProgram();
};

// A worker process serving one module (see above). Its errors name `where`
// (e.g. "model.torchscript sha256:..."); what the worker says is not trusted:
// its messages are kept out of shareable errors (core/status.h), except the op
// check's refusal, which the host writes itself from the op and method names.
class SandboxSession {
 public:
  // Starts the worker. Internal when it cannot start.
  static StatusOr<std::unique_ptr<SandboxSession>> Start(const Sandbox& sandbox, std::string where);
  ~SandboxSession();  // ends the worker, removes its folder
  SandboxSession(const SandboxSession&) = delete;
  SandboxSession& operator=(const SandboxSession&) = delete;

  struct Loaded {
    ModelState state;  // the module's parameters, then buffers
    int64_t num_parameters = 0;
    int64_t num_buffers = 0;
  };
  // Loads the module's bytes. With a non-empty `input_shape`, forward() must
  // map a batch of such examples to [batch, num_classes] (InvalidArgument
  // naming the shapes otherwise).
  StatusOr<Loaded> Load(const std::string& module_bytes, const std::vector<int64_t>& input_shape,
                        int num_classes);
  // REQUIRES: Load() succeeded. `state` must have the loaded layout.
  Status SetState(const ModelState& state);
  StatusOr<ModelState> GetState();
  // One local training call (Model::Train without DP) on `data`, which is
  // sent to the worker the first time it is used, from `start` (null: the
  // weights the worker has); `*trained` gets the weights after it. One
  // exchange with the worker.
  StatusOr<TrainStats> Train(const ModelState* start, const DataView& data,
                             const TrainingConfig& config, uint64_t seed,
                             const LocalObjective& objective, ModelState* trained);
  // Log-probabilities, data.size() x num_classes, of the weights `weights`
  // (null: the worker's).
  StatusOr<std::vector<float>> Predict(const ModelState* weights, const DataView& data,
                                       int num_classes);
  // The module with its current weights, as TorchScript bytes.
  StatusOr<std::string> Save();

  pid_t pid() const { return pid_; }

 private:
  friend class SandboxedLayers;
  SandboxSession(Sandbox sandbox, std::string where)
      : sandbox_(std::move(sandbox)), where_(std::move(where)) {}
  // Sends a request and waits for the reply's payload (at most `max_reply`
  // bytes); ends the worker on any failure.
  StatusOr<std::string> Call(uint32_t kind, const std::string& payload, uint64_t max_reply);
  // The worker's id of `data`'s data set, sending it first if need be.
  StatusOr<uint64_t> DatasetId(const DataView& data);
  Status CheckLayout(const ModelState& state) const;
  void Stop();

  Sandbox sandbox_;
  std::string where_;
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string folder_;
  ModelState layout_;        // the loaded module's names and shapes
  size_t state_bytes_ = 0;   // layout_ serialized: what a reply of weights takes
  size_t module_bytes_ = 0;  // the module's file
  std::vector<std::pair<std::shared_ptr<const Dataset>, uint64_t>> sent_;
};

// A vertical job's bottom model from its TorchScript module (see
// LayerStack::LoadTorchScriptHere): the submodule named after the party,
// loaded, checked and trained in a worker of its own. What the worker sends
// back is checked for size and finiteness.
class SandboxedLayers : public SplitLayers {
 public:
  // Starts a worker and loads `submodule` of `module_bytes` there, mapping
  // `inputs` columns to `outputs`, with the weights the file holds (a party
  // draws its own: DrawInitialWeights). InvalidArgument, shareable and
  // written here, when an operation is refused or the submodule does not
  // fit (ScriptedMisfitMessage); Internal when the worker cannot start or
  // fails.
  static StatusOr<std::unique_ptr<SandboxedLayers>> Load(const Sandbox& sandbox, std::string where,
                                                         const std::string& module_bytes,
                                                         const std::string& submodule,
                                                         int64_t inputs, int64_t outputs,
                                                         const TrainingConfig& training);

  StatusOr<std::vector<float>> Forward(absl::Span<const float> x, int64_t rows,
                                       bool train) override;
  StatusOr<std::vector<float>> Backward(absl::Span<const float> output_gradient) override;
  Status SetLearningRate(double learning_rate) override;
  // Internal when a weight is not finite.
  StatusOr<ModelState> Weights() override;
  Status SetState(const ModelState& state) override { return session_->SetState(state); }
  int64_t inputs() const override { return inputs_; }
  int64_t outputs() const override { return outputs_; }
  int64_t num_parameters() const override { return num_parameters_; }
  std::string Describe() const override;

 private:
  SandboxedLayers() = default;

  std::unique_ptr<SandboxSession> session_;
  std::string submodule_;
  int64_t inputs_ = 0, outputs_ = 0, num_parameters_ = 0;
  int64_t pass_rows_ = 0;  // of the training pass Backward() goes back through
};

// `fedsilo sandbox-worker`: serves the host on file descriptor 3 until it
// closes. Returns the process's exit status.
int RunSandboxWorker();

// The worker's system-call filter, installed in the calling process for the
// rest of its life (exposed for its test). Internal error if it cannot be.
Status InstallSandboxFilter();

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_SANDBOX_H_
