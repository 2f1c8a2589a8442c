#include "silo/vertical_party.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "core/seeded_shuffle.h"
#include "ml/metrics.h"
#include "secure/audit_log.h"

namespace fedsilo::silo {

privacy::SecureRandom TestWeightsRandom(uint64_t seed) {
  privacy::SecureRandom::Key key{};
  for (size_t i = 0; i < 8; ++i) key[i] = static_cast<uint8_t>(seed >> (8 * i));
  return privacy::SecureRandom::WithKeyForTesting(key);
}

namespace {

bool AllFinite(const std::vector<float>& values) {
  return std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); });
}

}  // namespace

VerticalPartyAgent::VerticalPartyAgent(std::string name, const JobConfig& job,
                                       ml::TabularData table, const VerticalPartyOptions& options)
    : name_(std::move(name)),
      job_(job),
      identity_(options.identity),
      max_peer_ids_(options.max_peer_ids),
      min_intersection_(options.min_intersection),
      table_(std::move(table)) {
  kept_ = job_.vertical.predict_with.empty() ? nullptr : options.kept;
  module_ = options.module;
  sandbox_ = options.sandbox;
  if (kept_ != nullptr) {
    module_ = std::make_shared<const std::string>(kept_->module);
    // The split model is the kept run's: its layers, cut and columns' coding.
    job_.model = kept_->job.model;
    job_.vertical.cut_width = kept_->job.vertical.cut_width;
    job_.vertical.top_hidden = kept_->job.vertical.top_hidden;
    job_.preprocess = kept_->job.preprocess;
  }
  labelled_ = !table_.labels.empty();
  test_seed_ = options.model_seed;
  model_seed_ = options.model_seed.has_value() ? *options.model_seed : noise_.Next64();
  label_owner_ = name_ == job_.vertical.label_owner;
  const std::vector<std::string>& parties = job_.federation.silos;
  own_index_ =
      static_cast<size_t>(std::find(parties.begin(), parties.end(), name_) - parties.begin());
}

StatusOr<std::unique_ptr<VerticalPartyAgent>> VerticalPartyAgent::Create(
    std::string name, const JobConfig& job, const DatasetEntry& dataset,
    const VerticalPartyOptions& options) {
  const std::string where = absl::StrCat("party '", name, "'");
  const std::vector<std::string>& parties = job.federation.silos;
  if (std::find(parties.begin(), parties.end(), name) == parties.end()) {
    return Shareable(absl::InvalidArgumentError(
        absl::StrCat(where, ": not one of the job's parties (federation.silos)")));
  }
  if (dataset.csv.empty() || dataset.schema.id.empty()) {
    return Shareable(absl::InvalidArgumentError(
        absl::StrCat(where, ": dataset '", job.data.dataset,
                     "' has no id column in the party's catalog (datasets.", job.data.dataset,
                     ".id); a vertical job matches the parties' rows by it")));
  }
  const bool owner = name == job.vertical.label_owner;
  const bool scoring = !job.vertical.predict_with.empty();
  ml::TabularSchema schema = dataset.schema;
  PreprocessConfig preprocess = job.preprocess;
  if (scoring) {
    const KeptPart* kept = options.kept.get();
    if (kept == nullptr) {
      return Shareable(absl::FailedPreconditionError(absl::StrCat(
          where, ": has no part of run '", job.vertical.predict_with, "' to predict with")));
    }
    if (kept->job.federation.silos != parties ||
        kept->job.vertical.label_owner != job.vertical.label_owner) {
      return Shareable(absl::InvalidArgumentError(
          absl::StrCat(where, ": run '", kept->run_id, "' was trained by the parties ",
                       absl::StrJoin(kept->job.federation.silos, ", "), " with the label at ",
                       kept->job.vertical.label_owner,
                       "; a split model predicts with the same parties, in the same order "
                       "(federation.silos, vertical.label_owner)")));
    }
    // The columns its bottom model reads, coded as in that run.
    preprocess = kept->job.preprocess;
    preprocess.statistics = kept->sums.Finish();
    const ml::TabularSchema model = ml::SchemaOfJob(preprocess);
    for (const std::string& column : model.features) {
      if (!schema.features.empty() && std::find(schema.features.begin(), schema.features.end(),
                                                column) == schema.features.end()) {
        return Shareable(absl::FailedPreconditionError(absl::StrCat(
            where, ": its bottom model of run '", kept->run_id, "' reads column '", column,
            "', which dataset '", job.data.dataset,
            "' does not offer (its catalog's features, or its policy's vertical.columns)")));
      }
    }
    schema.features = model.features;
    schema.categorical = model.categorical;
    if (!owner) schema.label.clear();
  }
  const ModelConfig& model = scoring ? options.kept->job.model : job.model;
  if (model.kind == ModelKind::kTorchScript) {
    const bool have = scoring ? !options.kept->module.empty()
                              : options.module != nullptr && !options.module->empty();
    if (!have) {
      return Shareable(absl::FailedPreconditionError(absl::StrCat(
          where, scoring ? absl::StrCat(": its part of run '", options.kept->run_id,
                                        "' has no TorchScript module (bottom.pt)")
                         : std::string(": the job's TorchScript module (model.torchscript) did "
                                       "not come with it"))));
    }
    if (!options.sandbox.has_value()) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat(where, ": has no sandbox to run the job's TorchScript module in")));
    }
  }
  if (owner && !scoring && dataset.schema.label.empty()) {
    return Shareable(absl::InvalidArgumentError(absl::StrCat(
        where, ": is the label owner, but its catalog names no label column (datasets.",
        job.data.dataset, ".label)")));
  }
  StatusOr<ml::TabularData> table = ml::ReadTabularCsv(
      dataset.csv, schema, preprocess, /*need_label=*/owner && !scoring && !schema.label.empty());
  if (!table.ok()) return Annotate(table.status(), where);
  if (!owner) {
    table->labels.clear();  // only the label owner's labels are used
  } else if (table->labels.empty() && !scoring) {
    return DataError(absl::StatusCode::kInvalidArgument,
                     absl::StrCat(where, ": some of the label owner's rows have no label"),
                     dataset.csv);
  }
  std::vector<std::string> ids = table->ids;
  std::sort(ids.begin(), ids.end());
  int64_t repeated = 0;
  const std::string* first = nullptr;
  for (size_t i = 1; i < ids.size(); ++i) {
    if (ids[i] != ids[i - 1]) continue;
    ++repeated;
    if (first == nullptr) first = &ids[i];
  }
  if (repeated > 0) {
    // Which id, only in the silo's own log.
    return DataError(absl::StatusCode::kInvalidArgument,
                     absl::StrCat(where, ": ", repeated,
                                  " rows repeat an id held by an earlier row; a vertical job "
                                  "needs each person once"),
                     absl::StrCat(dataset.csv, ": '", *first, "' is one"));
  }
  auto agent = std::unique_ptr<VerticalPartyAgent>(
      new VerticalPartyAgent(std::move(name), job, *std::move(table), options));
  agent->id_column_ = dataset.schema.id;
  if (agent->job_.model.kind == ModelKind::kTorchScript) {
    // Loaded (and checked against the party's columns) now, before any id
    // is blinded: the job's module, in a sandbox; its submodule named after
    // the party.
    StatusOr<std::unique_ptr<ml::SandboxedLayers>> bottom = ml::SandboxedLayers::Load(
        *agent->sandbox_,
        absl::StrCat("its bottom model (submodule '", agent->name_, "' of model.torchscript)"),
        *agent->module_, agent->name_, static_cast<int64_t>(agent->table_.features.size()),
        agent->job_.vertical.cut_width, agent->job_.training);
    if (!bottom.ok()) return Annotate(bottom.status(), where);
    agent->bottom_ = *std::move(bottom);
  }
  return agent;
}

StatusOr<transport::BlindedSet> VerticalPartyAgent::Signed(const transport::BlindedSet& set,
                                                           std::string points) const {
  transport::BlindedSet out;
  out.origin = set.origin;
  out.hops = set.hops + 1;
  out.points = std::move(points);
  if (identity_ != nullptr) {
    out.certificate = identity_->certificate_pem();
    FEDSILO_ASSIGN_OR_RETURN(out.signature,
                             identity_->signer().Sign(transport::SetMessage(domain_, out)));
  }
  return out;
}

Status VerticalPartyAgent::CheckSigned(const transport::BlindedSet& set,
                                       const std::string& signer) const {
  if (identity_ == nullptr) return absl::OkStatus();
  if (set.signature.empty()) {
    return Shareable(absl::PermissionDeniedError(
        absl::StrCat("asked to blind a set of '", set.origin, "' that party '", signer,
                     "' did not sign: only the parties' own sets are blinded")));
  }
  Status checked = identity_->checker().Check(signer, secure::ParticipantKind::kSilo,
                                              set.certificate, transport::SetMessage(domain_, set),
                                              set.signature, std::chrono::system_clock::now());
  if (!checked.ok()) {
    return Shareable(absl::PermissionDeniedError(
        absl::StrCat("asked to blind a set of '", set.origin, "' whose signature is not party '",
                     signer, "''s: ", checked.message())));
  }
  return absl::OkStatus();
}

StatusOr<transport::BlindedSet> VerticalPartyAgent::BlindOwnIds(const std::string& domain) {
  if (psi_.has_value()) {
    return Shareable(absl::FailedPreconditionError("the party's ids were blinded already"));
  }
  FEDSILO_ASSIGN_OR_RETURN(secure::PsiParty psi, secure::PsiParty::Create(domain));
  psi_.emplace(std::move(psi));
  domain_ = domain;
  FEDSILO_ASSIGN_OR_RETURN(std::string points, psi_->Blind(table_.ids));
  transport::BlindedSet own;
  own.origin = name_;
  return Signed(own, std::move(points));
}

StatusOr<transport::BlindedSet> VerticalPartyAgent::Reblind(const transport::BlindedSet& set) {
  // Every blinding this party does lets whoever sends the points test them
  // against its set: it does one per other party of the job, no more, and
  // only of a set that comes to it in the job's rotation, from the party
  // before it.
  const std::vector<std::string>& parties = job_.federation.silos;
  if (!psi_.has_value()) {
    return Shareable(
        absl::FailedPreconditionError("asked to blind another party's ids before its own"));
  }
  if (set.origin == name_ ||
      std::find(parties.begin(), parties.end(), set.origin) == parties.end()) {
    // (Quoted short: the name is the sender's text.)
    return Shareable(absl::PermissionDeniedError(
        absl::StrCat("asked to blind the ids of '", set.origin.substr(0, 64),
                     "', which is not another party of the job")));
  }
  if (set.hops < 1 || set.hops >= static_cast<int>(parties.size()) ||
      transport::BlinderAt(parties, set.origin, set.hops + 1) != name_) {
    return Shareable(absl::PermissionDeniedError(
        absl::StrCat("asked to blind the set of '", set.origin, "' after ", set.hops,
                     " blindings, which is not this party's turn in the job's order")));
  }
  FEDSILO_RETURN_IF_ERROR(CheckSigned(set, transport::BlinderAt(parties, set.origin, set.hops)));
  const int64_t count = static_cast<int64_t>(set.points.size() / secure::kPsiPointBytes);
  if (max_peer_ids_ > 0 && count > max_peer_ids_) {
    return Shareable(absl::PermissionDeniedError(absl::StrCat(
        "asked to blind ", count, " ids of party '", set.origin,
        "'; this party's policy blinds at most ", max_peer_ids_, " (vertical.max_peer_ids)")));
  }
  if (reblinded_for_.count(set.origin) > 0) {
    return Shareable(absl::PermissionDeniedError(absl::StrCat(
        "asked a second time to blind the ids of party '", set.origin,
        "': a party blinds each other party's set once (more would let guessed ids be tested "
        "against its own)")));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string points, psi_->Reblind(set.points));
  reblinded_for_.insert(set.origin);
  return Signed(set, std::move(points));
}

StatusOr<transport::AlignedRows> VerticalPartyAgent::Align(const std::vector<int64_t>& rows,
                                                           const transport::BlindedSet& own_final) {
  const std::vector<std::string>& parties = job_.federation.silos;
  if (aligned_ || reblinded_for_.size() + 1 != parties.size()) {
    return Shareable(absl::FailedPreconditionError(
        aligned_ ? "the party's rows were aligned already"
                 : "asked to align its rows before it blinded every other party's ids"));
  }
  // Its own set as every party blinded it, one point per row of its table:
  // the aligned rows' digest is over those points.
  if (own_final.origin != name_ || own_final.hops != static_cast<int>(parties.size()) ||
      own_final.points.size() != static_cast<size_t>(table_.rows()) * secure::kPsiPointBytes) {
    return Shareable(absl::InvalidArgumentError(
        "asked to align its rows with a set that is not its own as every party blinded it"));
  }
  FEDSILO_RETURN_IF_ERROR(
      CheckSigned(own_final, transport::BlinderAt(parties, name_, own_final.hops)));
  if (min_intersection_ > 0 && static_cast<int64_t>(rows.size()) < min_intersection_) {
    return Shareable(absl::FailedPreconditionError(absl::StrCat(
        "the intersection holds ", rows.size(), " people; this party's policy takes part with ",
        min_intersection_, " or more (vertical.min_intersection)")));
  }
  std::vector<bool> seen(static_cast<size_t>(table_.rows()), false);
  for (int64_t r : rows) {
    if (r < 0 || r >= table_.rows() || seen[static_cast<size_t>(r)]) {
      return Shareable(absl::InvalidArgumentError(
          "the rows of the intersection are not distinct rows of the party's table"));
    }
    seen[static_cast<size_t>(r)] = true;
  }
  // One order at every party, which no one chooses: the ids sorted, then
  // shuffled with the job's seed.
  std::vector<int64_t> order = rows;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return table_.ids[static_cast<size_t>(a)] < table_.ids[static_cast<size_t>(b)];
  });
  std::mt19937_64 rng(job_.seed);
  SeededShuffle(order, rng);
  const int64_t n = static_cast<int64_t>(order.size());
  int64_t test = std::llround(static_cast<double>(n) * job_.data.test_fraction);
  if (n >= 2) test = std::clamp<int64_t>(test, 1, n - 1);
  if (scoring()) test = n;  // every row is scored, and none trains
  FEDSILO_RETURN_IF_ERROR(Prepare(order, n - test));
  aligned_ = true;
  // Every party's digest is the same only if they hold the same people in
  // the same order: the orchestrator compares them before the first step.
  std::string ordered = domain_;
  for (int64_t r : order) {
    ordered.append(own_final.points, static_cast<size_t>(r) * secure::kPsiPointBytes,
                   secure::kPsiPointBytes);
  }
  return transport::AlignedRows{n - test, test, secure::BytesDigest(ordered)};
}

Status VerticalPartyAgent::Prepare(const std::vector<int64_t>& order, int64_t train_rows) {
  const std::string where = absl::StrCat("party '", name_, "'");
  const std::vector<int64_t> train_order(order.begin(), order.begin() + train_rows);
  const std::vector<int64_t> test_order(order.begin() + train_rows, order.end());
  const ml::TabularData train = table_.Subset(train_order);
  const ml::TabularData test = table_.Subset(test_order);
  for (int64_t r : order) aligned_ids_.push_back(table_.ids[static_cast<size_t>(r)]);
  aligned_rows_ = order;
  num_classes_ = 2;
  if (kept_ != nullptr) {
    num_classes_ = kept_->classes;
  } else if (label_owner_) {
    num_classes_ = std::max({2, ml::NumClassesOf(train.labels), ml::NumClassesOf(test.labels)});
  }
  // The party's columns are scaled with its own training rows' statistics:
  // no other party has them, and none needs them. Scoring, with those of
  // the run that trained the model.
  PreprocessConfig preprocess = job_.preprocess;
  if (kept_ != nullptr) {
    sums_ = kept_->sums;
  } else if (train_rows > 0) {
    sums_ = ml::SumFeatures(train);
  }
  if (kept_ != nullptr || train_rows > 0) preprocess.statistics = sums_.Finish();
  preprocess.statistics.class_counts.resize(static_cast<size_t>(num_classes_));
  if (train_rows > 0) {
    FEDSILO_ASSIGN_OR_RETURN(train_, ml::PrepareTabular(train, preprocess, where));
  }
  if (!test_order.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(test_, ml::PrepareTabular(test, preprocess, where));
  }
  const std::vector<int> none;
  const std::vector<int>& hidden = job_.model.kind == ModelKind::kMlp ? job_.model.hidden : none;
  const int64_t features = static_cast<int64_t>(table_.features.size());
  const int64_t cut = job_.vertical.cut_width;
  if (bottom_ == nullptr) {  // a TorchScript one is loaded as the party is made
    FEDSILO_ASSIGN_OR_RETURN(
        bottom_, ml::LayerStack::Create({features, hidden, cut, /*relu_output=*/true, false},
                                        job_.training, model_seed_));
  }
  if (label_owner_) {
    const size_t parties = job_.federation.silos.size();
    FEDSILO_ASSIGN_OR_RETURN(
        top_, ml::LayerStack::Create({static_cast<int64_t>(parties) * cut, job_.vertical.top_hidden,
                                      num_classes_, false, /*input_gradient=*/true},
                                     job_.training, model_seed_ + 1));
  }
  if (kept_ != nullptr) {
    const std::string of = absl::StrCat(where, ": the kept model of run '", kept_->run_id, "'");
    FEDSILO_RETURN_IF_ERROR(Annotate(bottom_->SetState(kept_->bottom), of));
    if (top_ != nullptr) FEDSILO_RETURN_IF_ERROR(Annotate(top_->SetState(kept_->top), of));
    return absl::OkStatus();
  }
  // The initial weights are the party's own draw, from its secure
  // randomness: neither the job's seed, nor a module's file, nor libtorch's
  // 32-bit seed tells them.
  if (test_seed_.has_value()) {
    privacy::SecureRandom bottom_random = TestWeightsRandom(*test_seed_);
    FEDSILO_RETURN_IF_ERROR(ml::DrawInitialWeights(*bottom_, bottom_random));
    if (top_ != nullptr) {
      privacy::SecureRandom top_random = TestWeightsRandom(*test_seed_ + 1);
      FEDSILO_RETURN_IF_ERROR(ml::DrawInitialWeights(*top_, top_random));
    }
  } else {
    FEDSILO_RETURN_IF_ERROR(ml::DrawInitialWeights(*bottom_, noise_));
    if (top_ != nullptr) FEDSILO_RETURN_IF_ERROR(ml::DrawInitialWeights(*top_, noise_));
  }
  return absl::OkStatus();
}

Status VerticalPartyAgent::BeginRound(int round) {
  if (!aligned_) return Shareable(absl::FailedPreconditionError("the rows are not aligned yet"));
  const bool previous_done =
      round_ == 0 || (next_batch_ == batches_.size() && next_test_ == (test_ ? test_->size() : 0));
  if (scoring() && round != 1) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("asked to begin round ", round, " of a run that predicts: it has one")));
  }
  if (round != round_ + 1 || !previous_done) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("asked to begin round ", round, " after round ", round_,
                     previous_done ? "" : ", which has not trained and scored every row yet")));
  }
  round_ = round;
  batches_ = VerticalBatches(job_, round, train_ ? train_->size() : 0);
  next_batch_ = 0;
  next_test_ = 0;
  round_ended_ = false;
  train_loss_sum_ = 0;
  train_rows_seen_ = 0;
  const double lr = RoundLearningRate(job_.training, round);
  FEDSILO_RETURN_IF_ERROR(bottom_->SetLearningRate(lr));
  if (top_ != nullptr) FEDSILO_RETURN_IF_ERROR(top_->SetLearningRate(lr));
  return absl::OkStatus();
}

Status VerticalPartyAgent::TakeSelection(const transport::RowSelection& rows) {
  if (round_ == 0) {
    return Shareable(absl::FailedPreconditionError("asked for rows before the first round"));
  }
  if (!rows.test) {
    if (next_batch_ >= batches_.size() || rows.positions != batches_[next_batch_]) {
      return Shareable(absl::PermissionDeniedError(
          absl::StrCat("asked to train on rows that are not batch ", next_batch_ + 1, " of round ",
                       round_, " (each party knows the round's batches from the job)")));
    }
    ++next_batch_;
    return absl::OkStatus();
  }
  const int64_t test_rows = test_ ? test_->size() : 0;
  bool in_order = next_batch_ == batches_.size() && !rows.positions.empty();
  for (size_t k = 0; in_order && k < rows.positions.size(); ++k) {
    in_order =
        rows.positions[k] == next_test_ + static_cast<int64_t>(k) && rows.positions[k] < test_rows;
  }
  if (!in_order) {
    return Shareable(absl::PermissionDeniedError(
        absl::StrCat("asked to score test rows out of turn: a round scores its ", test_rows,
                     " test rows once, in order, after its last batch")));
  }
  next_test_ += static_cast<int64_t>(rows.positions.size());
  return absl::OkStatus();
}

StatusOr<std::vector<float>> VerticalPartyAgent::Gather(const transport::RowSelection& rows) const {
  if (!aligned_) return Shareable(absl::FailedPreconditionError("the rows are not aligned yet"));
  const std::shared_ptr<ml::Dataset>& d = rows.test ? test_ : train_;
  const int64_t size = d == nullptr ? 0 : d->size();
  if (rows.positions.empty()) {
    return Shareable(absl::InvalidArgumentError("a step needs at least one row"));
  }
  const int64_t f = size > 0 ? d->feature_size() : 0;
  std::vector<float> x(rows.positions.size() * static_cast<size_t>(f));
  for (size_t k = 0; k < rows.positions.size(); ++k) {
    const int64_t p = rows.positions[k];
    if (p < 0 || p >= size) {
      return Shareable(
          absl::InvalidArgumentError(absl::StrCat("row position ", p, " is outside the ", size,
                                                  rows.test ? " test" : " training", " rows")));
    }
    d->CopyExample(p, x.data() + k * static_cast<size_t>(f));
  }
  return x;
}

StatusOr<std::vector<float>> VerticalPartyAgent::Forward(const transport::RowSelection& rows) {
  FEDSILO_RETURN_IF_ERROR(TakeSelection(rows));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> x, Gather(rows));
  return bottom_->Forward(x, static_cast<int64_t>(rows.positions.size()), !rows.test);
}

Status VerticalPartyAgent::Backward(const std::vector<float>& gradient) {
  if (!aligned_) return Shareable(absl::FailedPreconditionError("the rows are not aligned yet"));
  if (!AllFinite(gradient)) {
    return Shareable(absl::InvalidArgumentError("a gradient with values that are not finite"));
  }
  return bottom_->Backward(gradient).status();
}

StatusOr<std::vector<float>> VerticalPartyAgent::TopInput(
    const transport::RowSelection& rows, const std::vector<std::vector<float>>& cut_outputs,
    bool train) {
  const std::vector<std::string>& parties = job_.federation.silos;
  const size_t n = rows.positions.size();
  const size_t cut = static_cast<size_t>(job_.vertical.cut_width);
  if (cut_outputs.size() + 1 != parties.size()) {
    return Shareable(absl::InvalidArgumentError(absl::StrCat("expected the cut-layer outputs of ",
                                                             parties.size() - 1, " parties, got ",
                                                             cut_outputs.size())));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> x, Gather(rows));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> own,
                           bottom_->Forward(x, static_cast<int64_t>(n), train));
  std::vector<const std::vector<float>*> parts;
  for (size_t p = 0, k = 0; p < parties.size(); ++p) {
    if (p == own_index_) {
      parts.push_back(&own);
      continue;
    }
    const std::vector<float>& out = cut_outputs[k++];
    if (out.size() != n * cut || !AllFinite(out)) {
      return Shareable(absl::InvalidArgumentError(
          absl::StrCat("party '", parties[p], "' sent ",
                       out.size() != n * cut ? "cut-layer outputs of the "
                                               "wrong size"
                                             : "cut-layer outputs that "
                                               "are not finite",
                       " (", out.size(), " values for ", n, " rows of ", cut, ")")));
    }
    parts.push_back(&out);
  }
  std::vector<float> input(n * cut * parties.size());
  for (size_t r = 0; r < n; ++r) {
    for (size_t p = 0; p < parts.size(); ++p) {
      std::copy_n(parts[p]->data() + r * cut, cut, input.data() + (r * parts.size() + p) * cut);
    }
  }
  return input;
}

StatusOr<ml::CrossEntropy> VerticalPartyAgent::ScoreTop(
    const transport::RowSelection& rows, const std::vector<std::vector<float>>& cut_outputs,
    std::vector<int64_t>* labels) {
  if (!label_owner_) {
    return Shareable(
        absl::FailedPreconditionError(absl::StrCat("party '", name_, "' is not the label owner")));
  }
  FEDSILO_RETURN_IF_ERROR(TakeSelection(rows));
  const bool train = !rows.test;
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> input, TopInput(rows, cut_outputs, train));
  const int64_t n = static_cast<int64_t>(rows.positions.size());
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> logits, top_->Forward(input, n, train));
  if (scoring()) {
    // Its labels (if any) are only written beside the predictions, here:
    // nothing computed from them leaves (see EndRound).
    ml::CrossEntropy scored;
    FEDSILO_ASSIGN_OR_RETURN(scored.log_probabilities,
                             ml::LogProbabilitiesOf(logits, n, num_classes_));
    return scored;
  }
  const ml::Dataset& d = train ? *train_ : *test_;
  for (int64_t p : rows.positions) labels->push_back(d.labels[static_cast<size_t>(p)]);
  return ml::CrossEntropyOf(logits, n, num_classes_, *labels);
}

StatusOr<transport::TopStepResult> VerticalPartyAgent::TopStep(
    const transport::RowSelection& rows, const std::vector<std::vector<float>>& cut_outputs) {
  if (rows.test) {
    return Shareable(absl::InvalidArgumentError("a training step on test rows"));
  }
  std::vector<int64_t> labels;
  FEDSILO_ASSIGN_OR_RETURN(ml::CrossEntropy ce, ScoreTop(rows, cut_outputs, &labels));
  const int64_t n = static_cast<int64_t>(rows.positions.size());
  if (!std::isfinite(ce.loss)) {
    return Shareable(absl::InternalError(
        "training diverged: the loss is not finite; lower training.learning_rate"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::vector<float> d_input, top_->Backward(ce.gradient));
  const size_t parties = job_.federation.silos.size();
  const size_t cut = static_cast<size_t>(job_.vertical.cut_width);
  transport::TopStepResult result;
  // Only the round's mean leaves: a batch's loss would tell of its labels.
  train_loss_sum_ += ce.loss * static_cast<double>(n);
  train_rows_seen_ += n;
  for (size_t p = 0; p < parties; ++p) {
    std::vector<float> slice(static_cast<size_t>(n) * cut);
    for (size_t r = 0; r < static_cast<size_t>(n); ++r) {
      std::copy_n(d_input.data() + (r * parties + p) * cut, cut, slice.data() + r * cut);
    }
    if (p == own_index_) {
      FEDSILO_RETURN_IF_ERROR(bottom_->Backward(slice).status());
      continue;
    }
    if (job_.vertical.gradient_noise > 0) {
      // Noise in proportion to the gradients this party gets for the batch,
      // so that one setting means the same for any model and learning rate.
      double sum = 0;
      for (float g : slice) sum += static_cast<double>(g) * g;
      const double rms = std::sqrt(sum / static_cast<double>(slice.size()));
      std::vector<float> noise(slice.size());
      noise_.FillGaussian(noise.data(), noise.size(), job_.vertical.gradient_noise * rms);
      for (size_t i = 0; i < slice.size(); ++i) slice[i] += noise[i];
    }
    result.gradients.push_back(std::move(slice));
  }
  return result;
}

Status VerticalPartyAgent::TopEvaluate(const transport::RowSelection& rows,
                                       const std::vector<std::vector<float>>& cut_outputs) {
  if (!rows.test) {
    return Shareable(absl::InvalidArgumentError("scoring rows that are not test rows"));
  }
  std::vector<int64_t> labels;
  FEDSILO_ASSIGN_OR_RETURN(ml::CrossEntropy ce, ScoreTop(rows, cut_outputs, &labels));
  const int64_t n = static_cast<int64_t>(rows.positions.size());
  eval_loss_sum_ += ce.loss * static_cast<double>(n);
  eval_log_probabilities_.insert(eval_log_probabilities_.end(), ce.log_probabilities.begin(),
                                 ce.log_probabilities.end());
  eval_labels_.insert(eval_labels_.end(), labels.begin(), labels.end());
  return absl::OkStatus();
}

StatusOr<transport::RoundMetrics> VerticalPartyAgent::EndRound() {
  const int64_t test_rows = test_ ? test_->size() : 0;
  const size_t k = static_cast<size_t>(num_classes_);
  if (!label_owner_ || round_ == 0 || round_ended_ || next_batch_ != batches_.size() ||
      next_test_ != test_rows || eval_log_probabilities_.empty() ||
      eval_log_probabilities_.size() != static_cast<size_t>(test_rows) * k) {
    return Shareable(absl::FailedPreconditionError(
        "a round's metrics come once, after every batch was trained and every test row scored"));
  }
  round_ended_ = true;
  transport::RoundMetrics metrics;
  metrics.train_loss =
      train_rows_seen_ > 0 ? train_loss_sum_ / static_cast<double>(train_rows_seen_) : 0;
  if (scoring()) {
    // A run that predicts sends no metrics: its model is fixed and every
    // aligned row is scored, so metrics over two sets of rows the
    // orchestrator chose would differ by exactly one row's label.
    predictions_ = std::move(eval_log_probabilities_);
    eval_log_probabilities_.clear();
    return metrics;
  }
  const size_t n = eval_labels_.size();
  std::vector<int64_t> predicted(n);
  std::vector<float> positive;
  for (size_t i = 0; i < n; ++i) {
    const float* row = eval_log_probabilities_.data() + i * k;
    predicted[i] = std::max_element(row, row + k) - row;
    if (k == 2) positive.push_back(std::exp(row[1]));
  }
  const ml::ClassificationMetrics m = ml::ComputeClassificationMetrics(
      eval_loss_sum_ / static_cast<double>(n), eval_labels_, predicted, positive);
  eval_log_probabilities_.clear();
  eval_labels_.clear();
  eval_loss_sum_ = 0;
  metrics.test = m.ToMap();
  return metrics;
}

StatusOr<ModelState> VerticalPartyAgent::BottomState() const {
  if (bottom_ == nullptr) return ModelState();
  return bottom_->Weights();
}

const std::string& VerticalPartyAgent::module() const {
  static const std::string* const kNone = new std::string();
  return module_ != nullptr ? *module_ : *kNone;
}

ModelState VerticalPartyAgent::TopState() const {
  return top_ != nullptr ? top_->GetState() : ModelState();
}

std::string VerticalPartyAgent::Describe() const {
  if (bottom_ == nullptr) return "(not aligned yet)";
  std::string d = absl::StrCat("bottom ", bottom_->Describe());
  if (top_ != nullptr) absl::StrAppend(&d, "; top ", top_->Describe());
  return d;
}

int64_t VerticalPartyAgent::predicted_rows() const {
  return static_cast<int64_t>(predictions_.size()) / std::max(1, num_classes_);
}

namespace {

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace

std::map<std::string, double> VerticalPartyAgent::PredictionMetrics() const {
  const size_t k = static_cast<size_t>(num_classes_);
  if (!labelled_ || predictions_.empty() || predictions_.size() != aligned_rows_.size() * k) {
    return {};
  }
  std::vector<int64_t> labels, predicted;
  std::vector<float> positive;
  double loss = 0;
  for (size_t i = 0; i < aligned_rows_.size(); ++i) {
    const int64_t label = table_.labels[static_cast<size_t>(aligned_rows_[i])];
    if (label < 0 || label >= num_classes_) return {};  // a class the model does not know
    const float* row = predictions_.data() + i * k;
    labels.push_back(label);
    predicted.push_back(std::max_element(row, row + k) - row);
    if (k == 2) positive.push_back(std::exp(row[1]));
    loss -= row[label];
  }
  return ml::ComputeClassificationMetrics(loss / static_cast<double>(labels.size()), labels,
                                          predicted, positive)
      .ToMap();
}

std::string VerticalPartyAgent::PredictionsCsv() const {
  const size_t k = static_cast<size_t>(num_classes_);
  if (predictions_.empty() || predictions_.size() != aligned_rows_.size() * k) return "";
  // The test rows are every aligned row, in the shared order: put them back
  // in the order of the party's own table.
  std::vector<size_t> at(aligned_rows_.size());
  std::iota(at.begin(), at.end(), 0);
  std::sort(at.begin(), at.end(),
            [&](size_t a, size_t b) { return aligned_rows_[a] < aligned_rows_[b]; });
  std::string csv = id_column_.empty() ? "id" : id_column_;
  absl::StrAppend(&csv, ",predicted");
  for (size_t c = 0; c < k; ++c) absl::StrAppend(&csv, ",p_", c);
  if (labelled_) absl::StrAppend(&csv, ",", table_.label.empty() ? "label" : table_.label);
  csv += "\n";
  for (size_t i : at) {
    const float* row = predictions_.data() + i * k;
    absl::StrAppend(&csv, CsvField(aligned_ids_[i]), ",", std::max_element(row, row + k) - row);
    for (size_t c = 0; c < k; ++c) absl::StrAppendFormat(&csv, ",%.6f", std::exp(row[c]));
    if (labelled_) absl::StrAppend(&csv, ",", table_.labels[static_cast<size_t>(aligned_rows_[i])]);
    csv += "\n";
  }
  return csv;
}

namespace {

constexpr char kBottomFile[] = "bottom.fsm";
constexpr char kTopFile[] = "top.fsm";
constexpr char kStatisticsFile[] = "statistics.fsm";
constexpr char kModuleFile[] = "bottom.pt";

}  // namespace

Status KeepPart(const std::string& dir, const std::string& run_id,
                const VerticalPartyAgent& agent) {
  const JobConfig& job = agent.job();
  const ModelMetadata metadata = {
      {"job", job.name},
      {"party", agent.name()},
      {"run", run_id},
      {"round", std::to_string(job.training.rounds)},
      {"job_yaml", JobConfigToYaml(job)},
      {"id_column", agent.id_column()},
      {"classes", std::to_string(agent.classes())},
      {"module", agent.module().empty() ? std::string() : secure::BytesDigest(agent.module())}};
  FEDSILO_ASSIGN_OR_RETURN(ModelState bottom, agent.BottomState());
  if (!agent.module().empty()) {
    FEDSILO_RETURN_IF_ERROR(
        WriteProtectedFile(absl::StrCat(dir, "/", kModuleFile), agent.module()));
  }
  FEDSILO_RETURN_IF_ERROR(
      WriteModelStateFile(absl::StrCat(dir, "/", kBottomFile), bottom, metadata));
  FEDSILO_RETURN_IF_ERROR(WriteModelStateFile(absl::StrCat(dir, "/", kStatisticsFile),
                                              agent.sums().ToState(), metadata));
  if (agent.label_owner()) {
    FEDSILO_RETURN_IF_ERROR(
        WriteModelStateFile(absl::StrCat(dir, "/", kTopFile), agent.TopState(), metadata));
  }
  return absl::OkStatus();
}

StatusOr<KeptPart> ReadKeptPart(const std::string& dir, const std::string& party,
                                const std::string& run_id) {
  const std::string where = absl::StrCat("party '", party, "'");
  const std::string bottom_path = absl::StrCat(dir, "/", kBottomFile);
  std::error_code ec;
  if (!std::filesystem::exists(bottom_path, ec)) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat(where, " kept no model of run '", run_id,
                     "': it did not take part in it, or the run did not finish")));
  }
  KeptPart kept;
  kept.run_id = run_id;
  // Paths only in the silo's own log: they name its folders.
  const auto read = [&](const char* file, ModelState* state) -> Status {
    const std::string path = absl::StrCat(dir, "/", file);
    StatusOr<ModelFile> model = ReadModelStateFile(path);
    if (!model.ok()) {
      return DataError(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat(where, ": its kept ", file, " of run '", run_id, "' cannot be read"),
          model.status().message());
    }
    const ModelMetadata& m = model->metadata;
    const auto field = [&](const char* key) {
      auto it = m.find(key);
      return it == m.end() ? std::string() : it->second;
    };
    if (field("party") != party || field("run") != run_id || field("job_yaml").empty()) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat(where, ": its kept ", file, " is not its part of run '", run_id,
                       "' (kept by an older release, or another party's or run's)")));
    }
    if (state == &kept.bottom) {
      FEDSILO_ASSIGN_OR_RETURN(kept.job, ParseJobConfig(field("job_yaml"), path));
      kept.id_column = field("id_column");
      kept.classes = std::atoi(field("classes").c_str());
      kept.module_digest = field("module");
      if (kept.classes < 2 || kept.classes > 100000) kept.classes = 2;
    }
    *state = std::move(model->state);
    return absl::OkStatus();
  };
  FEDSILO_RETURN_IF_ERROR(read(kBottomFile, &kept.bottom));
  ModelState sums;
  FEDSILO_RETURN_IF_ERROR(read(kStatisticsFile, &sums));
  FEDSILO_ASSIGN_OR_RETURN(kept.sums,
                           FeatureSums::FromState(sums, absl::StrCat(dir, "/", kStatisticsFile)));
  if (kept.job.vertical.label_owner == party) FEDSILO_RETURN_IF_ERROR(read(kTopFile, &kept.top));
  if (kept.job.model.kind == ModelKind::kTorchScript) {
    const std::string path = absl::StrCat(dir, "/", kModuleFile);
    StatusOr<std::string> module = ReadProtectedFile(path);
    if (!module.ok() || module->empty()) {
      return DataError(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat(where, ": its kept ", kModuleFile, " of run '", run_id, "' cannot be read"),
          module.ok() ? path + " is empty" : std::string(module.status().message()));
    }
    // The module the weights were trained in, and no other.
    if (secure::BytesDigest(*module) != kept.module_digest) {
      return DataError(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat(where, ": its kept ", kModuleFile, " of run '", run_id,
                                    "' is not the module its part was trained in"),
                       path);
    }
    kept.module = *std::move(module);
  }
  return kept;
}

}  // namespace fedsilo::silo
