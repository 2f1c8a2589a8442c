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

// A party's set of ids in the private set intersection: blinded by its
// origin and then by the next `hops` - 1 parties in the job's order (the
// origin first), as the last of them sent it. In a federation that party
// signs it with the key of its certificate, over SetMessage(), so that
// whoever relays it (the orchestrator) cannot pass off points of its own
// making as a party's: blinding guessed ids would test them against the
// party's set. In simulation the sets go unsigned.
struct BlindedSet {
  std::string origin;       // the party whose ids these are
  int hops = 0;             // how many parties have blinded them
  std::string points;       // secure::PsiParty's encoding
  std::string certificate;  // the signer's, PEM ("" unsigned)
  std::string signature;
};

// What the last party to blind `set` signs: the run's domain, the origin,
// the hops and the points' SHA-256.
std::string SetMessage(const std::string& domain, const BlindedSet& set);

// The party of `parties` (the job's order) that blinds a set of `origin`
// at hop `hop` (1: the origin itself), or "" when `origin` is not a party.
std::string BlinderAt(const std::vector<std::string>& parties, const std::string& origin, int hop);

// The aligned rows a party holds once the intersection is known: the same
// people at every party, in one order, split alike.
struct AlignedRows {
  int64_t train = 0;
  int64_t test = 0;
  // SHA-256 of the run's domain and the aligned rows' fully blinded points in
  // order (hex): equal at every party exactly when they hold the same people
  // in the same order. (Not of the ids: a digest of a few ids could be
  // reversed by trying every id.)
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
  // party's ids, hashed to the group and blinded with its own scalar (hops 1).
  virtual StatusOr<BlindedSet> BlindOwnIds(const std::string& domain) = 0;
  // Another party's set raised to this party's scalar (one more hop). A
  // party answers once per other party of the job, after it blinded its own,
  // and only a set that comes to it in the job's rotation: blinded by the
  // parties before it, and signed by the last of them when it checks
  // signatures.
  virtual StatusOr<BlindedSet> Reblind(const BlindedSet& set) = 0;
  // The positions of the party's own rows in the intersection, with the
  // party's own set as every party blinded it (hops: the number of parties;
  // signed by its last blinder when the party checks signatures). The party
  // puts the rows in the shared order (its ids sorted, then shuffled with
  // the job's seed) and splits them into training and test rows alike; the
  // digest it answers is over those rows' fully blinded points, which the
  // orchestrator holds already.
  virtual StatusOr<AlignedRows> Align(const std::vector<int64_t>& rows,
                                      const BlindedSet& own_final) = 0;

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
