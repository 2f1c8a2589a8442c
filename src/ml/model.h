// Model: a trainable classifier (built-in logistic regression, MLP or CNN, or
// a TorchScript module from model.torchscript) behind a framework-free
// interface. libtorch stays inside model.cc; callers
// exchange weights as ModelState.
//
// Thread safety: one Model must be used by one thread at a time. Different
// Models may train concurrently on different threads; each training thread runs
// libtorch and BLAS single-threaded (parallelism comes from running silos side
// by side, which is 10-70x faster here than threaded BLAS on small batches).
#ifndef FEDSILO_ML_MODEL_H_
#define FEDSILO_ML_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"
#include "ml/dataset.h"
#include "ml/metrics.h"

namespace fedsilo::privacy {
class SecureRandom;
}  // namespace fedsilo::privacy

namespace fedsilo::ml {

struct Sandbox;
struct RefusedOp;

struct ModelSpec {
  ModelConfig config;
  std::vector<int64_t> input_shape;  // one example's shape, e.g. {1, 28, 28}
  int num_classes = 0;
};

// What one local training call did.
struct TrainStats {
  int64_t examples = 0;  // examples in the training set
  int64_t steps = 0;     // optimizer steps taken
  double loss = 0;       // mean cross-entropy over every example seen
  double accuracy = 0;   // share of examples predicted right while training
};

// DP-SGD for Model::Train (Abadi et al. 2016, as Opacus does it): each step
// takes every example with probability q = batch_size / N (Poisson sampling),
// clips each example's gradient to L2 norm `max_grad_norm`, sums, adds
// Gaussian noise of standard deviation noise_multiplier x max_grad_norm and
// divides by the expected batch size q N. Steps per epoch: round(N /
// batch_size), at least 1. Per-example gradients come from one backward pass
// per batch (layer inputs and output gradients), not one per example.
struct DpSgdOptions {
  double noise_multiplier = 0;
  double max_grad_norm = 1.0;
  // Draws the sampling and the noise, which must be secret from everyone who
  // sees the update (the orchestrator). Not owned. Null: a generator keyed
  // from the operating system for this call (what a silo uses); tests give
  // one keyed by them to replay a run.
  privacy::SecureRandom* random = nullptr;
};

// DP-SGD's sample rate and steps per epoch for `n` examples.
double DpSampleRate(int64_t n, int batch_size);
int64_t DpStepsPerEpoch(int64_t n, int batch_size);

// Terms federated strategies add to a silo's local objective.
struct LocalObjective {
  // FedProx (Li et al., MLSys 2020): (mu/2) |w - w_start|², w_start being the
  // weights Train() starts from (the global model).
  double proximal_mu = 0;
  // SCAFFOLD (Karimireddy et al., ICML 2020): a constant c - c_i added to
  // every step's gradient. Laid out like GetState(); only the parameters'
  // tensors are used. Not owned; may be null.
  const ModelState* gradient_correction = nullptr;
};

class Model {
 public:
  // Builds a model with weights initialised from `seed` (the same seed gives
  // the same weights). InvalidArgument naming `model.name` when the spec does
  // not fit the data (e.g. a CNN on non-image rows).
  // A TorchScript module (model.torchscript) is untrusted code: it runs in a
  // worker process of `sandbox` (ml/sandbox.h), loaded from the file's bytes,
  // its operations checked, behind the same interface; without a sandbox it
  // is refused (FailedPrecondition).
  static StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec, uint64_t seed,
                                                 const Sandbox* sandbox = nullptr);
  // The sandbox worker's side: a module's bytes loaded in *this* process,
  // which must be a sandbox worker (or a test of the training mechanics).
  // Every method's operations are checked first unless `check_ops` is false
  // (tests of the system-call filter); refusals go to `refused` (and the
  // result is InvalidArgument). An empty spec.input_shape skips the check of
  // forward() against the data's shape.
  static StatusOr<std::unique_ptr<Model>> LoadTorchScriptHere(const std::string& module_bytes,
                                                              const ModelSpec& spec, bool check_ops,
                                                              std::vector<RefusedOp>* refused);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Parameters (then buffers) in registration order, as float32 tensors.
  // Buffers (batch norm's running statistics) travel and are aggregated like
  // parameters; integer ones (num_batches_tracked) as floats, rounded back.
  ModelState GetState() const;
  // REQUIRES nothing; InvalidArgument naming the tensor if `state` does not
  // have exactly this model's layout.
  Status SetState(const ModelState& state);

  // Runs `config.local_epochs` epochs of minibatch training with a fresh
  // optimizer, examples shuffled by `seed`. InvalidArgument if `data` is empty,
  // Internal if the loss becomes NaN or infinite.
  // With `dp`, trains with DP-SGD instead (see DpSgdOptions); `seed` then
  // plays no part. InvalidArgument naming the layer when the model has one
  // DP-SGD cannot compute per-example gradients for.
  // `objective` adds the terms federated strategies put in the local
  // objective (see LocalObjective); their gradients are added to every
  // step's, after DP-SGD's noise (they do not depend on the data).
  StatusOr<TrainStats> Train(const DataView& data, const TrainingConfig& config, uint64_t seed,
                             const DpSgdOptions* dp = nullptr,
                             const LocalObjective& objective = LocalObjective());

  // Each example's gradient norm (of the summed loss) over all parameters:
  // the fast path DP-SGD uses, or, with `reference`, one backward pass per
  // example. For checking the first against the second.
  StatusOr<std::vector<double>> PerExampleGradientNorms(const DataView& data, bool reference);

  // Loss, accuracy and (for two classes) precision, recall and ROC AUC.
  StatusOr<ClassificationMetrics> Evaluate(const DataView& data) const;
  // Each example's log-probability of each class: size() x num_classes
  // values, row-major. (Labels are not used.)
  StatusOr<std::vector<float>> PredictLogProbabilities(const DataView& data) const;

  // Writes the model, with its current weights, as a TorchScript file that
  // torch.jit.load reads. InvalidArgument for the built-in models.
  Status SaveTorchScript(const std::string& path) const;
  // The same file's bytes.
  StatusOr<std::string> SaveTorchScriptBytes() const;
  // Writes `state` (laid out as GetState() lays out the module's parameters
  // and buffers) into the TorchScript module at `module_path` and saves the
  // result to `out`, without the data the module was trained on. The module
  // is loaded in `sandbox`. InvalidArgument naming the module and the tensor
  // when they do not fit.
  static Status ExportTorchScript(const std::string& module_path, const ModelState& state,
                                  const std::string& out, const Sandbox* sandbox);
  // The same file's bytes, for a writer that seals them (a run's own
  // final_model.pt). `module_path` may be sealed (a kept copy).
  static StatusOr<std::string> TorchScriptWithState(const std::string& module_path,
                                                    const ModelState& state,
                                                    const Sandbox* sandbox);

  int64_t num_parameters() const;
  int64_t num_buffers() const;
  // e.g. "mlp 64-200-200-10, 55,050 parameters".
  std::string Describe() const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Runs libtorch once (a small training step, a TorchScript load) so that
// what it sets up on first use -- CPU features, BLAS, the JIT -- is set up
// before the sandbox's system-call filter closes the files it reads.
Status WarmUpLibtorch();

// The metrics of predictions (from PredictLogProbabilities) against `data`'s
// labels: what Model::Evaluate reports.
ClassificationMetrics MetricsOfPredictions(const std::vector<float>& log_probabilities,
                                           int num_classes, const DataView& data);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_MODEL_H_
