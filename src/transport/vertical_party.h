// What the orchestrator asks of a party to a vertical job (docs/vertical.md):
// the steps of the private set intersection, then those of split learning.
// Only blinded points, row positions, cut-layer outputs, their gradients and
// the label owner's aggregate metrics cross it: never an id, a feature or a
// label. The orchestrator's side is orchestrator/vertical_run.h; a party's
// is silo/vertical_party.h.
//
// Thread safety: the orchestrator calls one party from one thread at a time;
// different parties at once.
#ifndef FEDSILO_TRANSPORT_VERTICAL_PARTY_H_
#define FEDSILO_TRANSPORT_VERTICAL_PARTY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/status.h"

namespace fedsilo::transport {

// The aligned rows a party holds once the intersection is known: the same
// people at every party, in one order, split alike.
struct AlignedRows {
  int64_t train = 0;
  int64_t test = 0;
  // SHA-256 of the run's domain and the aligned ids in order (hex): equal at
  // every party exactly when they hold the same people in the same order.
  std::string order_digest;
};

// Which of the aligned rows a step is about: positions into the training or
// the test rows.
struct RowSelection {
  bool test = false;
  std::vector<int64_t> positions;
};

// The label owner's answer to a training step: for every other party (in
// the job's order of parties, the label owner left out) the gradient of the
// loss with respect to its cut-layer output.
struct TopStepResult {
  std::vector<std::vector<float>> gradients;
};

// What the label owner says of a round, once its test rows are scored: the
// mean training loss over the round, and the test rows' metrics ("loss",
// "accuracy", and for two classes "precision", "recall", "auc").
struct RoundMetrics {
  double train_loss = 0;
  std::map<std::string, double> test;
};

class VerticalParty {
 public:
  virtual ~VerticalParty() = default;
  virtual const std::string& name() const = 0;

  // Private set intersection (secure/psi.h), for `domain` (the run): the
  // party's ids, hashed to the group and blinded with its own scalar.
  virtual StatusOr<std::string> BlindOwnIds(const std::string& domain) = 0;
  // Another party's points raised to this party's scalar. A party answers
  // once per other party of the job, after it blinded its own.
  virtual StatusOr<std::string> Reblind(const std::string& from_party,
                                        absl::string_view points) = 0;
  // The positions of the party's own rows in the intersection. The party
  // puts them in the shared order (its ids sorted, then shuffled with the
  // job's seed) and splits them into training and test rows alike.
  virtual StatusOr<AlignedRows> Align(const std::vector<int64_t>& rows) = 0;

  // Split learning. Every party knows which rows a round may ask for: the
  // round's batches (VerticalBatches), in order, then every test row once,
  // in order; it refuses any other selection (so that no one can query its
  // model, or the label owner's, on rows of their choosing).
  //
  // The cut-layer outputs of the selected rows (rows x vertical.cut_width,
  // row-major); of training rows, kept for Backward().
  virtual StatusOr<std::vector<float>> Forward(const RowSelection& rows) = 0;
  // The gradient of the loss with respect to the last training Forward()'s
  // outputs: the party steps its bottom model.
  virtual Status Backward(const std::vector<float>& gradient) = 0;
  // At the start of a round (from 1, each once, in order): the learning
  // rate it trains with, and the rows it may be asked for.
  virtual Status BeginRound(int round) = 0;

  // Label owner only. One training step on the selected training rows, with
  // every other party's cut-layer outputs of them (in the job's order of
  // parties, the label owner left out).
  virtual StatusOr<TopStepResult> TopStep(const RowSelection& rows,
                                          const std::vector<std::vector<float>>& cut_outputs) = 0;
  // Scores the selected test rows; their metrics come with EndRound().
  virtual Status TopEvaluate(const RowSelection& rows,
                             const std::vector<std::vector<float>>& cut_outputs) = 0;
  // The round's metrics, once every batch was trained and every test row
  // scored; FailedPrecondition before.
  virtual StatusOr<RoundMetrics> EndRound() = 0;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_VERTICAL_PARTY_H_
