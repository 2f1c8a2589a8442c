// The pieces of a vertical job's split model (docs/vertical.md): each party's
// bottom model and the label owner's top model are LayerStacks, trained step
// by step with what the others send (cut-layer outputs forward, their
// gradients back) as plain float matrices, so that libtorch stays here.
//
// Thread safety: one LayerStack is used by one thread at a time; different
// ones may run at once.
#ifndef FEDSILO_ML_SPLIT_MODEL_H_
#define FEDSILO_ML_SPLIT_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"

namespace fedsilo::privacy {
class SecureRandom;
}  // namespace fedsilo::privacy

namespace fedsilo::ml {

struct RefusedOp;

// One part of a split model, wherever it runs, with its own optimizer
// (training.optimizer, learning_rate, momentum, weight_decay), which keeps
// its state from step to step.
class SplitLayers {
 public:
  virtual ~SplitLayers() = default;
  // The outputs (rows x outputs, row-major) of `x` (rows x inputs). With
  // `train`, the pass is kept for Backward(). InvalidArgument when `x` is not
  // rows x inputs values; Internal on a non-finite output.
  virtual StatusOr<std::vector<float>> Forward(absl::Span<const float> x, int64_t rows,
                                               bool train) = 0;
  // Back-propagates the gradient of the loss with respect to the last
  // training Forward()'s outputs, takes one optimizer step, and returns the
  // gradient with respect to that pass's inputs (empty unless the layers
  // were made to give it). FailedPrecondition without a training pass to go
  // back through; InvalidArgument when the gradient's size is not the
  // outputs'.
  virtual StatusOr<std::vector<float>> Backward(absl::Span<const float> output_gradient) = 0;
  // The optimizer's learning rate from the next step on (training.lr_decay).
  virtual Status SetLearningRate(double learning_rate) = 0;
  // The weights (parameters, then buffers).
  virtual StatusOr<ModelState> Weights() = 0;
  // InvalidArgument naming the tensor when `state` is not laid out as
  // Weights().
  virtual Status SetState(const ModelState& state) = 0;
  virtual int64_t inputs() const = 0;
  virtual int64_t outputs() const = 0;
  virtual int64_t num_parameters() const = 0;
  // "mlp 9-32-8, 616 parameters".
  virtual std::string Describe() const = 0;
};

// Why a TorchScript submodule cannot be a bottom model. Written by the
// sandbox's host from these facts alone (a module's own words are not
// trusted): see ScriptedMisfitMessage().
struct ScriptedMisfit {
  enum Problem {
    kFits = 0,
    kNoSubmodule,   // the module has no submodule of that name
    kForwardFails,  // its forward() raises on a batch of zeros
    kWrongShape,    // its forward() returns another shape than [batch, outputs]
    kNotFloat32,    // a parameter is not float32
    kNoParameters,  // it has nothing to train
  };
  Problem problem = kFits;
  std::vector<int64_t> output_shape;  // kWrongShape: what forward() returned
};

// "submodule 'bank' of the job's TorchScript module: its forward() ...".
std::string ScriptedMisfitMessage(const ScriptedMisfit& misfit, const std::string& submodule,
                                  int64_t inputs, int64_t outputs);

// Fully connected layers fc1, fc2, ... of widths hidden..., outputs, with
// ReLU after each but the last (and after the last too with relu_output),
// and its own optimizer; or, in the sandbox's worker, a submodule of a
// TorchScript module (LoadTorchScriptHere).
class LayerStack : public SplitLayers {
 public:
  struct Options {
    int64_t inputs = 0;
    std::vector<int> hidden;
    int64_t outputs = 0;
    bool relu_output = false;
    // Backward() returns the gradient with respect to the inputs (the top
    // model's, for the parties' cut layers).
    bool input_gradient = false;
  };
  // Weights initialised from `seed` (the same seed gives the same weights).
  // InvalidArgument for a stack without inputs or outputs; Internal when
  // libtorch cannot make it (out of memory).
  static StatusOr<std::unique_ptr<LayerStack>> Create(const Options& options,
                                                      const TrainingConfig& training,
                                                      uint64_t seed);
  // The submodule `submodule` of the TorchScript module `module_bytes`
  // (a module holding one submodule per party), mapping options.inputs
  // columns to options.outputs, with the weights the file holds. Only in a
  // sandbox's worker: loading runs the module's code. With `check_ops`,
  // every operation of the whole module is checked first
  // (ml/torchscript_check.h): `*refused` gets the first refused one.
  // `*misfit` says why a submodule does not fit. InvalidArgument when the
  // bytes are not a TorchScript module, an operation is refused, or the
  // submodule does not fit.
  static StatusOr<std::unique_ptr<LayerStack>> LoadTorchScriptHere(
      const std::string& module_bytes, const std::string& submodule, const Options& options,
      const TrainingConfig& training, bool check_ops, std::vector<RefusedOp>* refused,
      ScriptedMisfit* misfit);
  ~LayerStack() override;
  LayerStack(const LayerStack&) = delete;
  LayerStack& operator=(const LayerStack&) = delete;

  StatusOr<std::vector<float>> Forward(absl::Span<const float> x, int64_t rows,
                                       bool train) override;
  StatusOr<std::vector<float>> Backward(absl::Span<const float> output_gradient) override;
  Status SetLearningRate(double learning_rate) override;
  StatusOr<ModelState> Weights() override { return GetState(); }
  Status SetState(const ModelState& state) override;
  int64_t inputs() const override;
  int64_t outputs() const override;
  int64_t num_parameters() const override;
  std::string Describe() const override;

  ModelState GetState() const;

 private:
  struct Impl;
  explicit LayerStack(std::unique_ptr<Impl> impl);
  // The optimizer over the layers' parameters.
  Status MakeOptimizer(const TrainingConfig& training);
  std::unique_ptr<Impl> impl_;
};

struct CrossEntropy {
  double loss = 0;                       // the mean over the rows
  std::vector<float> gradient;           // of the mean loss, rows x classes
  std::vector<float> log_probabilities;  // rows x classes
};

// Draws `layers`' initial weights from `random`: every tensor of two or
// more dimensions (a weight matrix or kernel, parameter or buffer) uniform
// within 1/sqrt(fan_in), as libtorch's linear and convolution layers start
// (Kaiming-uniform), and the `bias` beside each within the same bound; other
// tensors keep their values. A party draws its parts' weights so, from its
// own secure randomness: weights anyone could compute (from a job's seed,
// a module's file, or libtorch's 32-bit seed) would let whoever sees the
// first cut-layer outputs turn them back into the party's columns.
Status DrawInitialWeights(SplitLayers& layers, privacy::SecureRandom& random);

// The mean cross-entropy of `logits` (rows x classes) against `labels`, and
// its gradient with respect to the logits. InvalidArgument when the sizes do
// not agree or a label is not a class.
StatusOr<CrossEntropy> CrossEntropyOf(absl::Span<const float> logits, int64_t rows, int classes,
                                      absl::Span<const int64_t> labels);

// The log-probabilities (rows x classes) of `logits`, for rows without
// labels. InvalidArgument when the sizes do not agree.
StatusOr<std::vector<float>> LogProbabilitiesOf(absl::Span<const float> logits, int64_t rows,
                                                int classes);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_SPLIT_MODEL_H_
