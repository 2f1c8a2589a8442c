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
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"
#include "ml/dataset.h"
#include "ml/split_model.h"
#include "ml/tabular.h"
#include "privacy/secure_random.h"
#include "secure/psi.h"
#include "secure/secagg.h"
#include "silo/dataset_catalog.h"
#include "transport/vertical_party.h"

namespace fedsilo::silo {

struct VerticalPartyOptions {
  // Tests only: the bottom model's initial weights from this seed, and the
  // top model's from model_seed + 1. By default each party draws its own
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
};

class VerticalPartyAgent : public transport::VerticalParty {
 public:
  // Reads the party's table of job.data.dataset from its catalog entry
  // (with the label at the label owner only). InvalidArgument, naming the
  // party, for a dataset without an id column, a label owner whose table
  // lacks labels, or ids held twice.
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
  // The trained models: the bottom model, and the top model at the label
  // owner (empty elsewhere).
  ModelState BottomState() const;
  ModelState TopState() const;
  // "mlp 9-32-8, 616 parameters" (and the top model at the label owner).
  std::string Describe() const;

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
  uint64_t model_seed_ = 0;
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
  std::unique_ptr<ml::LayerStack> bottom_, top_;
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
