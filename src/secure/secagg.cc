#include "secure/secagg.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fedsilo/v1/secagg.pb.h"
#include "secure/certificate_authority.h"

namespace fedsilo::secure {
namespace {

namespace pb = fedsilo::v1::secagg;

constexpr absl::string_view kCommitContext = "fedsilo-secagg-b";

std::string MaskContext(const std::string& run_id, int round) {
  return absl::StrCat("fedsilo secagg mask|", run_id, "|", round);
}
std::string ShareKeyContext(const std::string& run_id, int round) {
  return absl::StrCat("fedsilo secagg share|", run_id, "|", round);
}

// Whether `count` silos' values of `bits` bits sum without wrapping in int32.
bool SumFits(int count, int bits) {
  const int64_t largest = (int64_t{1} << (bits - 1)) - 1;
  return static_cast<int64_t>(count) * largest <= std::numeric_limits<int32_t>::max();
}

Status CheckParams(const SecAggParams& p, size_t participants) {
  if (participants > static_cast<size_t>(kSecAggMaxSilos)) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation takes at most ",
                                                   kSecAggMaxSilos, " silos a round, not ",
                                                   participants));
  }
  if (p.threshold < 2 || static_cast<size_t>(p.threshold) > participants) {
    return absl::InvalidArgumentError(absl::StrCat("threshold ", p.threshold, " is not in [2, ",
                                                   participants, "] (the silos of the round)"));
  }
  if (2 * static_cast<size_t>(p.threshold) <= participants) {
    // Two disjoint survivor lists could then each gather `threshold` signatures.
    return absl::InvalidArgumentError(
        absl::StrCat("threshold ", p.threshold, " is not more than half of the ", participants,
                     " silos of the round; it must be at least ", participants / 2 + 1));
  }
  if (p.bits < 8 || p.bits > 30 || !(p.clip_range > 0) || p.max_weight < 0 || p.clip_norm < 0) {
    return absl::InvalidArgumentError("bits, clip_range, max_weight or clip_norm out of range");
  }
  if (!SumFits(static_cast<int>(participants), p.bits)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the sum of ", participants, " silos' values of ", p.bits,
        " bits can wrap; lower privacy.secure_aggregation.bits to at most ",
        32 - static_cast<int>(std::ceil(std::log2(static_cast<double>(participants) + 1)))));
  }
  return absl::OkStatus();
}

std::string ShareAssociated(const std::string& run_id, int round, const std::string& from,
                            const std::string& to) {
  return absl::StrCat(run_id, "|", round, "|", from, "|", to);
}

// A stage's place in the round (the oneof's field numbers are not in order).
int StageOrder(pb::Request::StageCase stage) {
  switch (stage) {
    case pb::Request::kAdvertise:
      return 1;
    case pb::Request::kShareKeys:
      return 2;
    case pb::Request::kMaskedInput:
      return 3;
    case pb::Request::kConsistency:
      return 4;
    case pb::Request::kUnmask:
      return 5;
    default:
      return 0;
  }
}

// Names, each prefixed by its length: no two lists give the same text.
std::string EncodeNames(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& n : names) absl::StrAppend(&out, n.size(), ":", n, ";");
  return out;
}

template <typename Message>
StatusOr<Message> ParseAs(absl::string_view bytes, absl::string_view what) {
  Message m;
  if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(what, " does not parse"));
  }
  return m;
}

// std::llround for |y| < 2^52, inline: the libm call was a third of a silo's
// encoding time. y - t is exact, so ties are found exactly.
int64_t RoundHalfAway(double y) {
  int64_t t = static_cast<int64_t>(y);  // toward zero
  const double rest = y - static_cast<double>(t);
  t += static_cast<int64_t>(rest >= 0.5) - static_cast<int64_t>(rest <= -0.5);
  return t;
}

}  // namespace

StatusOr<std::shared_ptr<const SecAggIdentity>> SecAggIdentity::Create(
    std::string certificate_pem, const std::string& private_key_pem, const std::string& ca_pem,
    std::shared_ptr<const RevocationList> revoked) {
  std::shared_ptr<SecAggIdentity> identity(new SecAggIdentity());
  identity->certificate_pem_ = std::move(certificate_pem);
  FEDSILO_ASSIGN_OR_RETURN(identity->signer_, MessageSigner::Create(private_key_pem));
  FEDSILO_ASSIGN_OR_RETURN(identity->checker_,
                           SignatureChecker::Create(ca_pem, std::move(revoked)));
  return std::shared_ptr<const SecAggIdentity>(std::move(identity));
}

std::string AdvertMessage(const std::string& run_id, int round, const std::string& silo,
                          const Key32& share_public_key, const Key32& mask_public_key) {
  return absl::StrCat("fedsilo secagg advert|", EncodeNames({run_id}), round, "|",
                      EncodeNames({silo}), ToBytes(share_public_key), ToBytes(mask_public_key));
}

std::string SurvivorsMessage(const std::string& run_id, int round,
                             std::vector<std::string> survivors) {
  return absl::StrCat("fedsilo secagg survivors|", EncodeNames({run_id}), round, "|",
                      EncodeNames(std::move(survivors)));
}

namespace {
// PermissionDenied unless `silo`'s certificate (the CA's, for a silo of that
// name) signed `message`.
Status CheckSilo(const SignatureChecker& checker, const std::string& silo,
                 const std::string& certificate_pem, absl::string_view message,
                 absl::string_view signature) {
  return checker.Check(silo, ParticipantKind::kSilo, certificate_pem, message, signature,
                       std::chrono::system_clock::now());
}
}  // namespace

int SecAggThreshold(int configured, int sampled, int min_silos) {
  if (configured > 0) return configured;
  return std::min(std::max(sampled, 2), std::max({2, (2 * sampled + 2) / 3, min_silos}));
}

FixedPoint::FixedPoint(double clip_range, int bits)
    : clip_range_(clip_range),
      scale_(static_cast<double>((int64_t{1} << (bits - 1)) - 1) / clip_range) {}

int64_t FixedPoint::Encode(const ModelState& update, double weight, uint32_t* out) const {
  int64_t clipped = 0;
  for (const Tensor& t : update.tensors()) {
    for (float v : t.floats()) {
      double x = v;
      if (x > clip_range_ || x < -clip_range_) {
        ++clipped;
        x = std::clamp(x, -clip_range_, clip_range_);
      }
      *out++ = static_cast<uint32_t>(static_cast<int32_t>(RoundHalfAway(weight * x * scale_)));
    }
  }
  return clipped;
}

StatusOr<MaskedVector> MaskedVector::Parse(absl::string_view bytes, uint64_t length,
                                           absl::string_view source) {
  if (bytes.size() != length * 4) {
    return absl::InvalidArgumentError(absl::StrCat("masked input from ", source, " has ",
                                                   bytes.size(), " bytes, expected ", length * 4));
  }
  MaskedVector v;
  v.values_.resize(length);
  std::memcpy(v.values_.data(), bytes.data(), bytes.size());  // little-endian hosts only
  return v;
}

void MaskedSum::Add(const MaskedVector& v) {
  uint32_t* sum = sum_.data();
  const uint32_t* add = v.values_.data();
  const size_t n = std::min(sum_.size(), v.values_.size());
  for (size_t i = 0; i < n; ++i) sum[i] += add[i];
  ++count_;
}

// --- silo side ---------------------------------------------------------------

Status CheckSecondReveal(const std::vector<SecAggReveal>& earlier, const SecAggReveal& next) {
  for (const SecAggReveal& e : earlier) {
    const bool same_round = e.run_id == next.run_id && e.round == next.round;
    const bool same_origin = !e.origin.empty() && e.origin == next.origin;
    if ((same_round || same_origin) && e.survivors != next.survivors) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this silo already revealed its shares for round ", e.round, " of job '", e.run_id,
          "' over the silos [", absl::StrJoin(e.survivors, ", "), "]",
          same_round ? "" : ", of updates from the same global model", "; a second sum over [",
          absl::StrJoin(next.survivors, ", "), "] would give away the difference of the two",
          same_round ? "" : " (a new job from the same model: give it another seed)"));
    }
  }
  return absl::OkStatus();
}

Status MemorySecAggJournal::Record(const SecAggReveal& reveal) {
  FEDSILO_RETURN_IF_ERROR(CheckSecondReveal(reveals_, reveal));
  if (std::find(reveals_.begin(), reveals_.end(), reveal) == reveals_.end()) {
    reveals_.push_back(reveal);
  }
  return absl::OkStatus();
}

void SecAggSilo::SetInput(const std::string& run_id, int round, ModelState update, int64_t examples,
                          std::string origin) {
  run_id_ = run_id;
  round_ = round;
  origin_ = std::move(origin);
  update_ = std::move(update);
  examples_ = examples;
  stage_ = 0;
  peers_.clear();
  held_.clear();
  masked_with_.clear();
}

StatusOr<std::string> SecAggSilo::Handle(const std::string& run_id, int round,
                                         absl::string_view request) {
  StatusOr<pb::Request> parsed = ParseAs<pb::Request>(request, "secure aggregation request");
  const pb::Request& r = parsed.ok() ? *parsed : pb::Request::default_instance();
  const int stage = StageOrder(r.stage_case());
  StatusOr<std::string> reply = absl::FailedPreconditionError("");
  if (!parsed.ok()) {
    reply = parsed.status();
  } else if (run_id != run_id_ || round != round_ || stage == 0 || stage_ < 0 ||
             stage != stage_ + 1) {
    reply = absl::FailedPreconditionError(
        absl::StrCat("secure aggregation: out-of-order request (stage ", stage, " of round ", round,
                     "; this silo is at stage ", stage_, " of round ", round_, ")"));
  } else if (r.has_advertise()) {
    reply = Advertise(r);
  } else if (r.has_share_keys()) {
    reply = ShareKeys(r);
  } else if (r.has_masked_input()) {
    reply = MaskedInput(r);
  } else if (r.has_consistency()) {
    reply = Consistency(r);
  } else {
    reply = Unmask(r);
  }
  if (!reply.ok()) {
    // Nothing of a refused round is kept, and nothing more is answered in it.
    update_.reset();
    held_.clear();
    stage_ = -1;
    return Annotate(reply.status(), "secure aggregation");
  }
  stage_ = stage;
  return reply;
}

std::string SecAggSilo::ShareContext(const std::string& from, const std::string& to) const {
  return ShareAssociated(run_id_, round_, from, to);
}

StatusOr<std::string> SecAggSilo::Advertise(const pb::Request& r) {
  const pb::AdvertiseRequest& a = r.advertise();
  params_.threshold = static_cast<int>(a.params().threshold());
  params_.clip_range = a.params().clip_range();
  params_.bits = static_cast<int>(a.params().bits());
  params_.max_weight = a.params().max_weight();
  params_.clip_norm = a.params().clip_norm();
  params_.length = a.params().length();
  participants_.assign(a.participants().begin(), a.participants().end());
  FEDSILO_RETURN_IF_ERROR(CheckParams(params_, participants_.size()));
  if (std::set<std::string>(participants_.begin(), participants_.end()).size() !=
      participants_.size()) {
    return absl::InvalidArgumentError("a silo is listed twice");
  }
  if (params_.threshold < min_silos_) {
    // A sum can be over as few as `threshold` silos.
    return absl::FailedPreconditionError(absl::StrCat(
        "a threshold of ", params_.threshold, " would allow a sum over fewer silos than the ",
        min_silos_, " the job and this silo's policy ask (min_silos)"));
  }
  if (std::find(participants_.begin(), participants_.end(), name_) == participants_.end()) {
    return absl::InvalidArgumentError("this silo is not among the participants");
  }
  if (!update_.has_value()) return absl::FailedPreconditionError("no update to mask");
  if (static_cast<uint64_t>(update_->num_elements()) != params_.length) {
    return absl::InvalidArgumentError(absl::StrCat("the update has ", update_->num_elements(),
                                                   " values, the round ", params_.length));
  }
  FEDSILO_RETURN_IF_ERROR(update_->CheckFinite());
  if (params_.max_weight > 0 && static_cast<double>(examples_) > params_.max_weight) {
    // (The count itself is masked like the update: it does not go out.)
    return absl::InvalidArgumentError(absl::StrCat(
        "this silo trained on more examples than privacy.secure_aggregation.max_weight (",
        params_.max_weight, ")"));
  }
  share_keys_ = NewKeyPair();
  mask_keys_ = NewKeyPair();
  pb::AdvertiseReply reply;
  reply.set_share_public_key(ToBytes(share_keys_.public_key));
  reply.set_mask_public_key(ToBytes(mask_keys_.public_key));
  if (identity_ != nullptr) {
    FEDSILO_ASSIGN_OR_RETURN(
        *reply.mutable_signature(),
        identity_->signer().Sign(
            AdvertMessage(run_id_, round_, name_, share_keys_.public_key, mask_keys_.public_key)));
    reply.set_certificate(identity_->certificate_pem());
  }
  return reply.SerializeAsString();
}

StatusOr<std::string> SecAggSilo::ShareKeys(const pb::Request& r) {
  peers_.clear();
  for (const pb::ParticipantKeys& k : r.share_keys().keys()) {
    const auto at = std::find(participants_.begin(), participants_.end(), k.silo());
    if (at == participants_.end() ||
        k.share_number() != static_cast<uint32_t>(at - participants_.begin() + 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("keys of '", k.silo(), "' do not match the participants"));
    }
    Peer peer;
    peer.share_number = k.share_number();
    FEDSILO_ASSIGN_OR_RETURN(peer.share_public_key, ToKey32(k.share_public_key(), "a public key"));
    FEDSILO_ASSIGN_OR_RETURN(peer.mask_public_key, ToKey32(k.mask_public_key(), "a public key"));
    if (identity_ != nullptr && k.silo() != name_) {
      // The orchestrator relays the keys: only the silo's own signature
      // shows they are the ones it made.
      FEDSILO_RETURN_IF_ERROR(CheckSilo(
          identity_->checker(), k.silo(), k.certificate(),
          AdvertMessage(run_id_, round_, k.silo(), peer.share_public_key, peer.mask_public_key),
          k.signature()));
      peer.certificate_pem = k.certificate();
    }
    if (!peers_.emplace(k.silo(), peer).second) {
      return absl::InvalidArgumentError(absl::StrCat("keys of '", k.silo(), "' come twice"));
    }
  }
  const auto me = peers_.find(name_);
  if (me == peers_.end() || me->second.share_public_key != share_keys_.public_key ||
      me->second.mask_public_key != mask_keys_.public_key) {
    return absl::InvalidArgumentError("this silo's own public keys are missing or changed");
  }
  if (peers_.size() < static_cast<size_t>(params_.threshold)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "only ", peers_.size(), " silos advertised keys, below the threshold ", params_.threshold));
  }
  self_seed_ = RandomKey32();
  const int count = static_cast<int>(participants_.size());
  const std::vector<Key32> key_shares =
      ShamirSplit(mask_keys_.secret_key, count, params_.threshold);
  const std::vector<Key32> seed_shares = ShamirSplit(self_seed_, count, params_.threshold);
  pb::ShareKeysReply reply;
  const std::string context = ShareKeyContext(run_id_, round_);
  for (const auto& [silo, peer] : peers_) {
    const size_t i = peer.share_number - 1;
    if (silo == name_) {
      held_[name_] = {key_shares[i], seed_shares[i]};
      continue;
    }
    pb::SharePair pair;
    pair.set_mask_key_share(ToBytes(key_shares[i]));
    pair.set_self_mask_share(ToBytes(seed_shares[i]));
    FEDSILO_ASSIGN_OR_RETURN(Key32 key, AgreeKey(share_keys_, peer.share_public_key, context));
    pb::EncryptedShares* e = reply.add_shares();
    e->set_from(name_);
    e->set_to(silo);
    e->set_ciphertext(Seal(key, pair.SerializeAsString(), ShareContext(name_, silo)));
  }
  reply.set_self_mask_commitment(ToBytes(Commit(self_seed_, kCommitContext)));
  return reply.SerializeAsString();
}

StatusOr<std::string> SecAggSilo::MaskedInput(const pb::Request& r) {
  const pb::MaskedInputRequest& m = r.masked_input();
  std::set<std::string> survivors(m.survivors().begin(), m.survivors().end());
  if (survivors.size() != static_cast<size_t>(m.survivors_size())) {
    return absl::InvalidArgumentError("a silo is listed twice");
  }
  for (const std::string& s : survivors) {
    if (peers_.count(s) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", s, "' did not advertise keys"));
    }
  }
  if (survivors.count(name_) == 0) {
    return absl::InvalidArgumentError("this silo is not among the survivors");
  }
  if (survivors.size() < static_cast<size_t>(params_.threshold)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "only ", survivors.size(), " silos shared keys, below the threshold ", params_.threshold));
  }
  const std::string context = ShareKeyContext(run_id_, round_);
  for (const pb::EncryptedShares& e : m.shares()) {
    if (e.to() != name_ || survivors.count(e.from()) == 0 || e.from() == name_ ||
        held_.count(e.from()) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected shares from '", e.from(), "' to '", e.to(), "'"));
    }
    FEDSILO_ASSIGN_OR_RETURN(Key32 key,
                             AgreeKey(share_keys_, peers_[e.from()].share_public_key, context));
    StatusOr<std::string> plain = Open(key, e.ciphertext(), ShareContext(e.from(), name_));
    if (!plain.ok()) return Annotate(plain.status(), absl::StrCat("shares from '", e.from(), "'"));
    FEDSILO_ASSIGN_OR_RETURN(pb::SharePair pair, ParseAs<pb::SharePair>(*plain, "a share pair"));
    FEDSILO_ASSIGN_OR_RETURN(Key32 key_share, ToKey32(pair.mask_key_share(), "a share"));
    FEDSILO_ASSIGN_OR_RETURN(Key32 seed_share, ToKey32(pair.self_mask_share(), "a share"));
    held_[e.from()] = {key_share, seed_share};
  }
  for (const std::string& s : survivors) {
    if (held_.count(s) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("no shares from '", s, "'"));
    }
  }

  // Encode: values, then the counters.
  ModelState& update = *update_;
  double within_clip_norm = 1;
  if (params_.clip_norm > 0 && ClipL2Norm(update, params_.clip_norm) > params_.clip_norm) {
    within_clip_norm = 0;
  }
  const double weight =
      params_.max_weight > 0 ? static_cast<double>(examples_) / params_.max_weight : 1.0;
  std::vector<uint32_t> values(params_.length + kSecAggCounters);
  const int64_t clipped =
      FixedPoint(params_.clip_range, params_.bits).Encode(update, weight, values.data());
  values[params_.length] = params_.max_weight > 0 ? static_cast<uint32_t>(examples_) : 1;
  values[params_.length + 1] = static_cast<uint32_t>(clipped);
  values[params_.length + 2] = static_cast<uint32_t>(within_clip_norm);
  update_.reset();

  // Mask: self mask, then one pairwise mask per other survivor.
  AddMask(self_seed_, absl::MakeSpan(values), /*subtract=*/false);
  const std::string mask_context = MaskContext(run_id_, round_);
  const uint32_t mine = peers_[name_].share_number;
  for (const std::string& s : survivors) {
    if (s == name_) continue;
    FEDSILO_ASSIGN_OR_RETURN(Key32 seed,
                             AgreeKey(mask_keys_, peers_[s].mask_public_key, mask_context));
    AddMask(seed, absl::MakeSpan(values), /*subtract=*/mine > peers_[s].share_number);
  }
  masked_with_ = std::move(survivors);
  pb::MaskedInputReply reply;
  reply.set_masked(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  return reply.SerializeAsString();
}

StatusOr<std::string> SecAggSilo::Consistency(const pb::Request& r) {
  const pb::ConsistencyRequest& c = r.consistency();
  std::set<std::string> survivors(c.survivors().begin(), c.survivors().end());
  if (survivors.size() != static_cast<size_t>(c.survivors_size())) {
    return absl::InvalidArgumentError("a silo is listed twice");
  }
  for (const std::string& s : survivors) {
    if (masked_with_.count(s) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", s, "' did not share keys"));
    }
  }
  if (survivors.count(name_) == 0) {
    return absl::InvalidArgumentError("this silo is not among the survivors");
  }
  if (survivors.size() < static_cast<size_t>(params_.threshold)) {
    return absl::InvalidArgumentError(absl::StrCat("only ", survivors.size(),
                                                   " silos sent masked input, below the threshold ",
                                                   params_.threshold));
  }
  pb::ConsistencyReply reply;
  if (identity_ != nullptr) {
    FEDSILO_ASSIGN_OR_RETURN(*reply.mutable_signature(),
                             identity_->signer().Sign(SurvivorsMessage(
                                 run_id_, round_, {survivors.begin(), survivors.end()})));
  }
  signed_survivors_ = std::move(survivors);
  return reply.SerializeAsString();
}

StatusOr<std::string> SecAggSilo::Unmask(const pb::Request& r) {
  const pb::UnmaskRequest& u = r.unmask();
  std::set<std::string> survivors(u.survivors().begin(), u.survivors().end());
  std::set<std::string> dropped(u.dropped().begin(), u.dropped().end());
  std::set<std::string> all = survivors;
  all.insert(dropped.begin(), dropped.end());
  if (survivors.size() != static_cast<size_t>(u.survivors_size()) ||
      dropped.size() != static_cast<size_t>(u.dropped_size()) ||
      all.size() != survivors.size() + dropped.size() || all != masked_with_) {
    return absl::InvalidArgumentError(
        "survivors and dropped silos must split the silos this one masked with");
  }
  if (survivors.count(name_) == 0) {
    return absl::InvalidArgumentError("this silo is not among the survivors");
  }
  if (survivors != signed_survivors_) {
    return absl::InvalidArgumentError("the survivors differ from the list this silo signed");
  }
  if (identity_ != nullptr) {
    // At least `threshold` survivors signed this very list: as each signs one
    // list a round and threshold > n/2, no other list can have as many.
    const std::string message =
        SurvivorsMessage(run_id_, round_, {survivors.begin(), survivors.end()});
    std::set<std::string> signers;
    for (const pb::SurvivorSignature& s : u.signatures()) {
      if (survivors.count(s.silo()) == 0 || !signers.insert(s.silo()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("a survivor signature of '", s.silo(), "' was not expected"));
      }
      if (s.silo() == name_) continue;  // its own: already known to match
      FEDSILO_RETURN_IF_ERROR(CheckSilo(identity_->checker(), s.silo(),
                                        peers_[s.silo()].certificate_pem, message, s.signature()));
    }
    signers.insert(name_);
    if (signers.size() < static_cast<size_t>(params_.threshold)) {
      return absl::InvalidArgumentError(
          absl::StrCat("only ", signers.size(),
                       " survivors signed the survivor list, below the "
                       "threshold ",
                       params_.threshold));
    }
  }
  // On record before anything is revealed: a crash after this refuses a
  // second sum rather than forgetting the first.
  FEDSILO_RETURN_IF_ERROR(
      journal_->Record({run_id_, round_, origin_, {survivors.begin(), survivors.end()}}));
  pb::UnmaskReply reply;
  for (const std::string& s : survivors) {
    pb::RevealedShare* share = reply.add_self_mask_shares();
    share->set_owner(s);
    share->set_share(ToBytes(held_[s].second));
  }
  for (const std::string& d : dropped) {
    pb::RevealedShare* share = reply.add_mask_key_shares();
    share->set_owner(d);
    share->set_share(ToBytes(held_[d].first));
  }
  held_.clear();
  return reply.SerializeAsString();
}

// --- orchestrator side ---------------------------------------------------------

StatusOr<SecAggRound> SecAggRound::Create(std::string run_id, int round, SecAggParams params,
                                          std::vector<std::string> participants,
                                          const ModelState& layout) {
  params.length = static_cast<uint64_t>(layout.num_elements());
  FEDSILO_RETURN_IF_ERROR(
      Annotate(CheckParams(params, participants.size()), "privacy.secure_aggregation"));
  return SecAggRound(std::move(run_id), round, params, std::move(participants), layout);
}

SecAggRound::SecAggRound(std::string run_id, int round, SecAggParams params,
                         std::vector<std::string> participants, const ModelState& layout)
    : run_id_(std::move(run_id)),
      round_(round),
      params_(params),
      participants_(std::move(participants)),
      layout_(layout.ZerosLike()),
      current_(participants_),
      sum_(params.length + kSecAggCounters) {}

absl::string_view SecAggRound::StageName(Stage stage) {
  switch (stage) {
    case Stage::kAdvertise:
      return "advertise";
    case Stage::kShareKeys:
      return "share keys";
    case Stage::kMaskedInput:
      return "masked input";
    case Stage::kConsistency:
      return "consistency";
    case Stage::kUnmask:
      return "unmask";
    case Stage::kFinished:
      return "finished";
  }
  return "?";
}

Status SecAggRound::InStage(Stage stage, absl::string_view what) const {
  if (stage_ == stage) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("secure aggregation: ", what,
                                                    " belongs to the ", StageName(stage),
                                                    " stage, and the round is at the ",
                                                    StageName(stage_), " stage"));
}

uint32_t SecAggRound::ShareNumber(const std::string& silo) const {
  return static_cast<uint32_t>(std::find(participants_.begin(), participants_.end(), silo) -
                               participants_.begin() + 1);
}

Status SecAggRound::Enough(absl::string_view stage) const {
  if (answered_.size() >= static_cast<size_t>(params_.threshold)) return absl::OkStatus();
  std::vector<std::string> missing;
  for (const std::string& s : current_) {
    if (std::find(answered_.begin(), answered_.end(), s) == answered_.end()) missing.push_back(s);
  }
  return absl::UnavailableError(absl::StrCat(
      "secure aggregation: only ", answered_.size(), " of ", current_.size(), " silos ", stage,
      ", below the threshold of ", params_.threshold, " (missing: ", absl::StrJoin(missing, ", "),
      "); the round is abandoned and no aggregate is applied"));
}

std::string SecAggRound::AdvertiseRequest() const {
  pb::Request r;
  pb::AdvertiseRequest* a = r.mutable_advertise();
  pb::Params* p = a->mutable_params();
  p->set_threshold(static_cast<uint32_t>(params_.threshold));
  p->set_clip_range(params_.clip_range);
  p->set_bits(static_cast<uint32_t>(params_.bits));
  p->set_max_weight(params_.max_weight);
  p->set_clip_norm(params_.clip_norm);
  p->set_length(params_.length);
  for (const std::string& s : participants_) a->add_participants(s);
  return r.SerializeAsString();
}

namespace {
// Whether `silo` is asked in this stage and has not answered yet.
Status CheckTurn(const std::vector<std::string>& current, std::vector<std::string>& answered,
                 const std::string& silo) {
  if (std::find(current.begin(), current.end(), silo) == current.end() ||
      std::find(answered.begin(), answered.end(), silo) != answered.end()) {
    return absl::FailedPreconditionError("a reply that was not asked for");
  }
  return absl::OkStatus();
}
}  // namespace

Status SecAggRound::AcceptAdvertise(const std::string& silo, absl::string_view reply) {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kAdvertise, "a reply with public keys"));
  FEDSILO_RETURN_IF_ERROR(CheckTurn(current_, answered_, silo));
  FEDSILO_ASSIGN_OR_RETURN(pb::AdvertiseReply a, ParseAs<pb::AdvertiseReply>(reply, "public keys"));
  FEDSILO_ASSIGN_OR_RETURN(Key32 share_pk, ToKey32(a.share_public_key(), "share public key"));
  FEDSILO_ASSIGN_OR_RETURN(Key32 mask_pk, ToKey32(a.mask_public_key(), "mask public key"));
  if (checker_ != nullptr) {
    FEDSILO_RETURN_IF_ERROR(CheckSilo(*checker_, silo, a.certificate(),
                                      AdvertMessage(run_id_, round_, silo, share_pk, mask_pk),
                                      a.signature()));
  }
  keys_[silo] = {share_pk, mask_pk, a.signature(), a.certificate()};
  answered_.push_back(silo);
  return absl::OkStatus();
}

StatusOr<std::string> SecAggRound::ShareKeysRequest() {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kAdvertise, "the request to share keys"));
  FEDSILO_RETURN_IF_ERROR(Enough("advertised keys"));
  pb::Request r;
  std::vector<std::string> advertised;
  for (const std::string& s : participants_) {
    if (std::find(answered_.begin(), answered_.end(), s) == answered_.end()) continue;
    advertised.push_back(s);
    pb::ParticipantKeys* k = r.mutable_share_keys()->add_keys();
    k->set_silo(s);
    k->set_share_number(ShareNumber(s));
    const Advert& advert = keys_[s];
    k->set_share_public_key(ToBytes(advert.share_public_key));
    k->set_mask_public_key(ToBytes(advert.mask_public_key));
    k->set_signature(advert.signature);
    k->set_certificate(advert.certificate_pem);
  }
  current_ = std::move(advertised);
  answered_.clear();
  stage_ = Stage::kShareKeys;
  return r.SerializeAsString();
}

Status SecAggRound::AcceptShareKeys(const std::string& silo, absl::string_view reply) {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kShareKeys, "a reply with shares"));
  FEDSILO_RETURN_IF_ERROR(CheckTurn(current_, answered_, silo));
  FEDSILO_ASSIGN_OR_RETURN(pb::ShareKeysReply s, ParseAs<pb::ShareKeysReply>(reply, "shares"));
  std::map<std::string, std::string> sent;
  for (const pb::EncryptedShares& e : s.shares()) {
    if (e.from() != silo || e.to() == silo ||
        std::find(current_.begin(), current_.end(), e.to()) == current_.end() ||
        !sent.emplace(e.to(), e.ciphertext()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("shares from '", e.from(), "' to '", e.to(), "' were not expected"));
    }
  }
  if (sent.size() + 1 != current_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shares for ", sent.size(), " silos, expected ", current_.size() - 1));
  }
  FEDSILO_ASSIGN_OR_RETURN(commitments_[silo],
                           ToKey32(s.self_mask_commitment(), "self-mask commitment"));
  for (auto& [to, ciphertext] : sent) mailbox_[to][silo] = std::move(ciphertext);
  answered_.push_back(silo);
  return absl::OkStatus();
}

StatusOr<std::map<std::string, std::string>> SecAggRound::MaskedInputRequests() {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kShareKeys, "the request for masked input"));
  FEDSILO_RETURN_IF_ERROR(Enough("shared their keys"));
  shared_.clear();
  for (const std::string& s : current_) {
    if (std::find(answered_.begin(), answered_.end(), s) != answered_.end()) shared_.push_back(s);
  }
  std::map<std::string, std::string> requests;
  for (const std::string& to : shared_) {
    pb::Request r;
    pb::MaskedInputRequest* m = r.mutable_masked_input();
    for (const std::string& s : shared_) m->add_survivors(s);
    for (const std::string& from : shared_) {
      if (from == to) continue;
      pb::EncryptedShares* e = m->add_shares();
      e->set_from(from);
      e->set_to(to);
      e->set_ciphertext(mailbox_[to][from]);
    }
    requests[to] = r.SerializeAsString();
  }
  mailbox_.clear();
  current_ = shared_;
  answered_.clear();
  stage_ = Stage::kMaskedInput;
  return requests;
}

Status SecAggRound::AcceptMaskedInput(const std::string& silo, absl::string_view reply) {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kMaskedInput, "a masked input"));
  FEDSILO_RETURN_IF_ERROR(CheckTurn(current_, answered_, silo));
  FEDSILO_ASSIGN_OR_RETURN(pb::MaskedInputReply m,
                           ParseAs<pb::MaskedInputReply>(reply, "masked input"));
  FEDSILO_ASSIGN_OR_RETURN(MaskedVector v,
                           MaskedVector::Parse(m.masked(), params_.length + kSecAggCounters,
                                               absl::StrCat("'", silo, "'")));
  sum_.Add(v);
  answered_.push_back(silo);
  return absl::OkStatus();
}

StatusOr<std::string> SecAggRound::ConsistencyRequest() {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kMaskedInput, "the request to sign the survivors"));
  FEDSILO_RETURN_IF_ERROR(Enough("sent their masked input"));
  survivors_.clear();
  dropped_.clear();
  for (const std::string& s : shared_) {
    (std::find(answered_.begin(), answered_.end(), s) != answered_.end() ? survivors_ : dropped_)
        .push_back(s);
  }
  pb::Request r;
  for (const std::string& s : survivors_) r.mutable_consistency()->add_survivors(s);
  current_ = survivors_;
  answered_.clear();
  stage_ = Stage::kConsistency;
  return r.SerializeAsString();
}

Status SecAggRound::AcceptConsistency(const std::string& silo, absl::string_view reply) {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kConsistency, "a survivor signature"));
  FEDSILO_RETURN_IF_ERROR(CheckTurn(current_, answered_, silo));
  FEDSILO_ASSIGN_OR_RETURN(pb::ConsistencyReply c,
                           ParseAs<pb::ConsistencyReply>(reply, "survivor signature"));
  if (checker_ != nullptr) {
    FEDSILO_RETURN_IF_ERROR(CheckSilo(*checker_, silo, keys_[silo].certificate_pem,
                                      SurvivorsMessage(run_id_, round_, survivors_),
                                      c.signature()));
  }
  survivor_signatures_[silo] = c.signature();
  answered_.push_back(silo);
  return absl::OkStatus();
}

StatusOr<std::string> SecAggRound::UnmaskRequest() {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kConsistency, "the request to unmask"));
  FEDSILO_RETURN_IF_ERROR(Enough("signed the survivors"));
  pb::Request r;
  pb::UnmaskRequest* u = r.mutable_unmask();
  for (const std::string& s : survivors_) u->add_survivors(s);
  for (const std::string& s : dropped_) u->add_dropped(s);
  for (const auto& [silo, signature] : survivor_signatures_) {
    pb::SurvivorSignature* s = u->add_signatures();
    s->set_silo(silo);
    s->set_signature(signature);
  }
  current_ = answered_;  // U4: the survivors that signed
  answered_.clear();
  stage_ = Stage::kUnmask;
  return r.SerializeAsString();
}

Status SecAggRound::AcceptUnmask(const std::string& silo, absl::string_view reply) {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kUnmask, "a reply with revealed shares"));
  FEDSILO_RETURN_IF_ERROR(CheckTurn(current_, answered_, silo));
  FEDSILO_ASSIGN_OR_RETURN(pb::UnmaskReply u, ParseAs<pb::UnmaskReply>(reply, "unmask shares"));
  auto collect = [&](const auto& revealed, const std::vector<std::string>& owners,
                     std::map<std::string, std::map<uint8_t, Key32>>& into) -> Status {
    std::map<std::string, Key32> got;
    for (const pb::RevealedShare& r : revealed) {
      if (std::find(owners.begin(), owners.end(), r.owner()) == owners.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("a share of '", r.owner(), "' not asked for"));
      }
      FEDSILO_ASSIGN_OR_RETURN(Key32 share, ToKey32(r.share(), "a share"));
      if (!got.emplace(r.owner(), share).second) {
        return absl::InvalidArgumentError(absl::StrCat("two shares of '", r.owner(), "'"));
      }
    }
    if (got.size() != owners.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(got.size(), " shares, expected ", owners.size()));
    }
    for (auto& [owner, share] : got) {
      into[owner][static_cast<uint8_t>(ShareNumber(silo))] = share;
    }
    return absl::OkStatus();
  };
  // Check both lists before keeping either.
  std::map<std::string, std::map<uint8_t, Key32>> self_shares, key_shares;
  FEDSILO_RETURN_IF_ERROR(collect(u.self_mask_shares(), survivors_, self_shares));
  FEDSILO_RETURN_IF_ERROR(collect(u.mask_key_shares(), dropped_, key_shares));
  for (auto& [owner, shares] : self_shares) self_shares_[owner].merge(shares);
  for (auto& [owner, shares] : key_shares) key_shares_[owner].merge(shares);
  answered_.push_back(silo);
  return absl::OkStatus();
}

StatusOr<SecAggOutcome> SecAggRound::Finish() {
  FEDSILO_RETURN_IF_ERROR(InStage(Stage::kUnmask, "finishing the round"));
  FEDSILO_RETURN_IF_ERROR(Enough("revealed their shares"));
  stage_ = Stage::kFinished;  // the sum is consumed below, whatever happens
  auto combine = [](const std::map<uint8_t, Key32>& shares) {
    return ShamirCombine(std::vector<std::pair<uint8_t, Key32>>(shares.begin(), shares.end()));
  };
  std::vector<uint32_t>& sum = sum_.sum_;
  const absl::Span<uint32_t> all = absl::MakeSpan(sum);
  for (const std::string& s : survivors_) {
    const Key32 seed = combine(self_shares_[s]);
    if (Commit(seed, kCommitContext) != commitments_[s]) {
      return absl::DataLossError(absl::StrCat(
          "secure aggregation: the self mask of '", s,
          "' rebuilt from the shares does not match its commitment (a share is wrong); the round "
          "is abandoned and no aggregate is applied"));
    }
    AddMask(seed, all, /*subtract=*/true);
  }
  const std::string mask_context = MaskContext(run_id_, round_);
  for (const std::string& d : dropped_) {
    KeyPair dropped;
    dropped.secret_key = combine(key_shares_[d]);
    dropped.public_key = PublicKeyOf(dropped.secret_key);
    if (dropped.public_key != keys_[d].mask_public_key) {
      return absl::DataLossError(absl::StrCat(
          "secure aggregation: the mask key of '", d,
          "' rebuilt from the shares does not match its public key (a share is wrong); the round "
          "is abandoned and no aggregate is applied"));
    }
    for (const std::string& s : survivors_) {
      FEDSILO_ASSIGN_OR_RETURN(Key32 seed,
                               AgreeKey(dropped, keys_[s].mask_public_key, mask_context));
      // s added this mask when it comes first, subtracted it otherwise.
      AddMask(seed, all, /*subtract=*/ShareNumber(s) < ShareNumber(d));
    }
  }

  SecAggOutcome out;
  out.contributors = sum_.count();
  const uint64_t n = params_.length;
  const double weight_units = static_cast<double>(sum[n]);
  out.total_weight = params_.max_weight > 0 ? weight_units / params_.max_weight : weight_units;
  out.clipped_values = sum[n + 1];
  out.within_clip_norm = static_cast<int>(sum[n + 2]);
  if (!(out.total_weight > 0)) {
    return absl::DataLossError("secure aggregation: the silos' weights sum to zero");
  }
  const double scale = FixedPoint(params_.clip_range, params_.bits).scale();
  const double factor = 1.0 / (scale * out.total_weight);
  out.quantization_error = 0.5 * out.contributors * factor;
  out.mean = layout_.ZerosLike();
  size_t at = 0;
  for (Tensor& t : out.mean.mutable_tensors()) {
    for (float& v : t.floats()) {
      v = static_cast<float>(static_cast<double>(static_cast<int32_t>(sum[at++])) * factor);
    }
  }
  std::fill(sum.begin(), sum.end(), 0);
  return out;
}

}  // namespace fedsilo::secure
