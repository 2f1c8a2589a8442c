// A silo's side of a vertical job (docs/vertical.md): its table (with an id
// column), its secret scalar for the private set intersection, its rows
// aligned with the other parties', its bottom model and, at the label
// owner, the top model and the labels. What it answers the orchestrator is
// in transport/vertical_party.h: blinded points, cut-layer outputs and their
// gradients, and at the label owner the test rows' aggregate metrics.
//
// Thread safety: as transport::VerticalParty.
#ifndef FEDSILO_SILO_VERTICAL_PARTY_H_
#define FEDSILO_SILO_VERTICAL_PARTY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/feature_statistics.h"
#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"
#include "ml/dataset.h"
#include "ml/sandbox.h"
#include "ml/split_model.h"
#include "ml/tabular.h"
#include "privacy/secure_random.h"
#include "secure/psi.h"
#include "secure/secagg.h"
#include "silo/dataset_catalog.h"
#include "transport/vertical_party.h"

namespace fedsilo::silo {

// A party's part of a trained split model, as it keeps it once the run's
// last round is done (KeepPart): its bottom model, the top model at the
// label owner, and the statistics its columns were scaled with. A job with
// vertical.predict_with scores new rows with it.
struct KeptPart {
  std::string run_id;
  JobConfig job;  // the run's, as the party took part in it
  ModelState bottom, top;
  FeatureSums sums;       // of the party's training rows
  std::string id_column;  // of the party's dataset in that run
  int classes = 2;
  // The run's TorchScript module (model.torchscript), whose submodule named
  // after the party is its bottom model, and its SHA-256 as the part
  // recorded it (ReadKeptPart checks the two agree); empty for a built-in
  // one.
  std::string module;
  std::string module_digest;
};

// The generator a party draws its initial weights from when the tests give
// it a seed (VerticalPartyOptions::model_seed): the same seed, the same
// weights.
privacy::SecureRandom TestWeightsRandom(uint64_t seed);

class VerticalPartyAgent;

// Writes `agent`'s part of run `run_id` into `dir` (which exists): bottom.fsm,
// top.fsm at the label owner, statistics.fsm (the sums as a ModelState), and
// bottom.pt, the job's TorchScript module, when its bottom model is one.
// Sealed when the process seals its files.
Status KeepPart(const std::string& dir, const std::string& run_id, const VerticalPartyAgent& agent);
// The part of party `party` of run `run_id` kept in `dir`. FailedPrecondition
// naming the party and the run when there is none (it did not take part,
// or the run did not finish), or when the files are another party's or
// another run's.
StatusOr<KeptPart> ReadKeptPart(const std::string& dir, const std::string& party,
                                const std::string& run_id);

struct VerticalPartyOptions {
  // Tests only: the bottom model's initial weights from this seed, and the
  // top model's from model_seed + 1 (TestWeightsRandom). By default each party draws its own
  // from the operating system: weights everyone could compute from the job
  // would let the label owner, or the orchestrator, turn the first cut-layer
  // outputs back into the party's columns.
  std::optional<uint64_t> model_seed;
  // In a federation: the party signs the sets it blinds with the key of its
  // certificate, and blinds only sets signed by the party before it in the
  // job's rotation (transport::BlindedSet). Null (simulation): sets go
  // unsigned, and unsigned sets are blinded.
  std::shared_ptr<const secure::SecAggIdentity> identity;
  // The most ids another party's set may hold for this party to blind it
  // (its policy's vertical.max_peer_ids): each blinding tests the set
  // against this party's ids, so a larger one could be guesses. 0: any.
  int64_t max_peer_ids = 0;
  // The fewest people the intersection may hold for this party to take part
  // (its policy's vertical.min_intersection): metrics over a handful of test
  // rows would tell their labels. 0: any.
  int64_t min_intersection = 0;
  // A job with vertical.predict_with: the party's part of that run, which
  // scores its rows (required then; unused otherwise).
  std::shared_ptr<const KeptPart> kept;
  // A job with model.torchscript: the module's bytes (required then), whose
  // submodule named after the party is its bottom model, and where that runs
  // (required then: a module is untrusted code).
  std::shared_ptr<const std::string> module;
  std::optional<ml::Sandbox> sandbox;
};

class VerticalPartyAgent : public transport::VerticalParty {
 public:
  // Reads the party's table of job.data.dataset from its catalog entry
  // (with the label at the label owner only). InvalidArgument, naming the
  // party, for a dataset without an id column, a label owner whose table
  // lacks labels, or ids held twice. When scoring (vertical.predict_with),
  // the columns are those its kept bottom model reads, the label is
  // optional, and the kept part must be of the job's parties in its order.
  static StatusOr<std::unique_ptr<VerticalPartyAgent>> Create(
      std::string name, const JobConfig& job, const DatasetEntry& dataset,
      const VerticalPartyOptions& options = VerticalPartyOptions());

  const std::string& name() const override { return name_; }
  StatusOr<transport::BlindedSet> BlindOwnIds(const std::string& domain) override;
  StatusOr<transport::BlindedSet> Reblind(const transport::BlindedSet& set) override;
  StatusOr<transport::AlignedRows> Align(const std::vector<int64_t>& rows,
                                         const transport::BlindedSet& own_final) override;
  StatusOr<std::vector<float>> Forward(const transport::RowSelection& rows) override;
  Status Backward(const std::vector<float>& gradient) override;
  Status BeginRound(int round) override;
  StatusOr<transport::TopStepResult> TopStep(
      const transport::RowSelection& rows,
      const std::vector<std::vector<float>>& cut_outputs) override;
  Status TopEvaluate(const transport::RowSelection& rows,
                     const std::vector<std::vector<float>>& cut_outputs) override;
  StatusOr<transport::RoundMetrics> EndRound() override;

  bool label_owner() const { return label_owner_; }
  const JobConfig& job() const { return job_; }
  // The party's rows as read (before alignment), and its features.
  int64_t rows() const { return table_.rows(); }
  const std::vector<std::string>& features() const { return table_.features; }
  // After Align(): the ids of the aligned rows in the shared order (training
  // rows first); what the party keeps to know whom a prediction is about.
  const std::vector<std::string>& aligned_ids() const { return aligned_ids_; }
  // The trained models: the bottom model (Internal when its sandbox fails),
  // and the top model at the label owner (empty elsewhere).
  StatusOr<ModelState> BottomState() const;
  ModelState TopState() const;
  // The job's TorchScript module ("" for a built-in bottom model).
  const std::string& module() const;
  // "mlp 9-32-8, 616 parameters" (and the top model at the label owner).
  std::string Describe() const;
  // Scoring (vertical.predict_with): every aligned row is a test row, and
  // the one round scores them.
  bool scoring() const { return kept_ != nullptr; }
  // The id column of the party's dataset, its classes (the label owner's),
  // and the sums of its training rows (after Align()).
  const std::string& id_column() const { return id_column_; }
  int classes() const { return num_classes_; }
  const FeatureSums& sums() const { return sums_; }
  // At the label owner of a scoring run, once its round ended: a CSV of
  // `id,predicted,p_0,...` (and the label when its rows have one), one line
  // per aligned row, in the order of its own table. Empty elsewhere.
  std::string PredictionsCsv() const;
  // Their metrics against the label owner's labels ("loss", "accuracy", and
  // for two classes "precision", "recall", "auc"), for its own use: empty
  // without labels, or with a label the model has no class for.
  std::map<std::string, double> PredictionMetrics() const;
  int64_t predicted_rows() const;

 private:
  VerticalPartyAgent(std::string name, const JobConfig& job, ml::TabularData table,
                     const VerticalPartyOptions& options);
  // Whether `rows` is what the round may ask for next (see
  // transport::VerticalParty), and counts it as asked.
  Status TakeSelection(const transport::RowSelection& rows);
  // The features (rows x features) of the selected rows; InvalidArgument
  // for a position outside them.
  StatusOr<std::vector<float>> Gather(const transport::RowSelection& rows) const;
  // The top model's input and labels for `rows`: every party's cut-layer
  // outputs side by side, this party's computed here (kept for its
  // backward pass when `train`).
  StatusOr<std::vector<float>> TopInput(const transport::RowSelection& rows,
                                        const std::vector<std::vector<float>>& cut_outputs,
                                        bool train);
  // The label owner's top model on `rows` (which it takes as asked), and
  // its cross-entropy with their labels (appended to `labels`).
  StatusOr<ml::CrossEntropy> ScoreTop(const transport::RowSelection& rows,
                                      const std::vector<std::vector<float>>& cut_outputs,
                                      std::vector<int64_t>* labels);
  Status Prepare(const std::vector<int64_t>& order, int64_t train_rows);
  // `points`, one hop on from `set`, signed when the party has an identity.
  StatusOr<transport::BlindedSet> Signed(const transport::BlindedSet& set,
                                         std::string points) const;
  // Whether `set` is signed by `signer`, when the party checks signatures.
  Status CheckSigned(const transport::BlindedSet& set, const std::string& signer) const;

  std::string name_;
  JobConfig job_;
  std::shared_ptr<const KeptPart> kept_;
  std::shared_ptr<const std::string> module_;
  std::optional<ml::Sandbox> sandbox_;
  std::string id_column_;
  FeatureSums sums_;
  std::vector<int64_t> aligned_rows_;  // rows of table_, in the shared order
  bool labelled_ = true;
  std::vector<float> predictions_;  // scoring, label owner: log-probabilities
  uint64_t model_seed_ = 0;
  std::optional<uint64_t> test_seed_;
  std::shared_ptr<const secure::SecAggIdentity> identity_;
  int64_t max_peer_ids_ = 0;
  int64_t min_intersection_ = 0;
  std::string domain_;  // of the intersection
  bool label_owner_ = false;
  size_t own_index_ = 0;  // in job.federation.silos
  ml::TabularData table_;
  std::optional<secure::PsiParty> psi_;
  std::set<std::string> reblinded_for_;
  bool aligned_ = false;
  std::vector<std::string> aligned_ids_;
  std::shared_ptr<ml::Dataset> train_, test_;
  int num_classes_ = 0;
  std::unique_ptr<ml::SplitLayers> bottom_;
  std::unique_ptr<ml::LayerStack> top_;
  privacy::SecureRandom noise_;
  // The round under way: its batches, how many were asked for, how many
  // test rows were scored, and (at the label owner) what they gave.
  int round_ = 0;
  std::vector<std::vector<int64_t>> batches_;
  size_t next_batch_ = 0;
  int64_t next_test_ = 0;
  bool round_ended_ = false;
  double train_loss_sum_ = 0;
  int64_t train_rows_seen_ = 0;
  std::vector<float> eval_log_probabilities_;
  std::vector<int64_t> eval_labels_;
  double eval_loss_sum_ = 0;
};

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_VERTICAL_PARTY_H_
