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

namespace fedsilo::ml {

// Fully connected layers fc1, fc2, ... of widths hidden..., outputs, with
// ReLU after each but the last (and after the last too with relu_output),
// and its own optimizer (training.optimizer, learning_rate, momentum,
// weight_decay), which keeps its state from step to step.
class LayerStack {
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
  ~LayerStack();
  LayerStack(const LayerStack&) = delete;
  LayerStack& operator=(const LayerStack&) = delete;

  // The outputs (rows x outputs, row-major) of `x` (rows x inputs). With
  // `train`, the pass is kept for Backward(). InvalidArgument when `x` is not
  // rows x inputs values; Internal on a non-finite output.
  StatusOr<std::vector<float>> Forward(absl::Span<const float> x, int64_t rows, bool train);
  // Back-propagates the gradient of the loss with respect to the last
  // training Forward()'s outputs, takes one optimizer step, and returns the
  // gradient with respect to that pass's inputs (empty unless
  // input_gradient). FailedPrecondition without a training pass to go back
  // through; InvalidArgument when the gradient's size is not the outputs'.
  StatusOr<std::vector<float>> Backward(absl::Span<const float> output_gradient);
  // The optimizer's learning rate from the next step on (training.lr_decay).
  Status SetLearningRate(double learning_rate);

  ModelState GetState() const;
  // InvalidArgument naming the tensor when `state` is not laid out as
  // GetState().
  Status SetState(const ModelState& state);
  int64_t inputs() const;
  int64_t outputs() const;
  int64_t num_parameters() const;
  // "mlp 9-32-8, 616 parameters".
  std::string Describe() const;

 private:
  struct Impl;
  explicit LayerStack(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct CrossEntropy {
  double loss = 0;                       // the mean over the rows
  std::vector<float> gradient;           // of the mean loss, rows x classes
  std::vector<float> log_probabilities;  // rows x classes
};

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
