// Secure aggregation after Bonawitz et al., "Practical Secure Aggregation for
// Privacy-Preserving Machine Learning" (CCS 2017), in its version against an
// active adversary: the orchestrator learns the weighted sum of the updates of
// the silos that stayed to the end of a round, and nothing about any one
// update, as long as fewer than `threshold` silos collude with it while it
// follows the protocol. When it lies to the silos (and cannot have the
// federation's CA issue it silo certificates: the CA's key stays with the
// operator, off the orchestrator's machine), the bound is fewer than
// 2 * threshold - n colluding silos of the n in the round: none at n = 3,
// threshold 2.
//
// A round asked twice: were the same update masked twice and unmasked over two
// survivor lists, the difference of the two sums would be one silo's update.
// So a silo reveals shares for a run's round, and for updates trained from one
// global model (its `origin`), over one survivor list only, and keeps the
// record (SecAggJournal: the silo's privacy ledger) across restarts. A round
// asked again with the same silos goes ahead (an orchestrator that restarted);
// with others it is refused. This holds against the same bound of colluders:
// a second sum needs `threshold` silos that did not reveal for the first.
//
// One round (all keys are fresh per round):
//  1. advertise: each silo makes two X25519 key pairs, one to encrypt shares
//     and one to agree pairwise mask seeds, and sends the public keys, signed
//     with its certificate's key (SecAggIdentity), with that certificate.
//  2. share keys: each silo checks every other silo's certificate (issued by
//     the federation CA to a silo of that name) and signature, so that the
//     orchestrator can neither swap a key nor add a participant of its own.
//     It draws a self-mask seed b, Shamir-splits b and its mask secret key
//     among all silos that advertised (any `threshold` shares recover them)
//     and sends each share encrypted for its holder, plus a commitment to b.
//  3. masked input: each silo encodes its update in fixed point (values
//     clipped to [-clip_range, clip_range], multiplied by its weight, scaled
//     to `bits` bits) and adds, mod 2^32, the AES-256-CTR stream of b and, for
//     every other silo v that shared keys, +/- the stream of the seed agreed
//     with v (+ when it comes first in share-number order). Pairwise masks
//     cancel in the sum of the silos that both stayed.
//  4. consistency: the orchestrator names the silos whose masked input it
//     has (the survivors); each signs that list once per round.
//  5. unmask: each silo still there checks that at least `threshold`
//     survivors signed the very list it signed, then reveals its shares of b
//     for the survivors, and of the mask secret key for the silos that left
//     after step 2 (never both for one silo). The orchestrator rebuilds them,
//     checks them against the commitments and public keys, removes the self
//     masks and the dropped silos' pairwise masks, and decodes the sum.
//
// Every silo refuses a threshold of half the participants or less: with it,
// an orchestrator could show two disjoint survivor lists, each signed by
// `threshold` silos, and have one silo's self mask and mask key both
// revealed. A silo without an identity (a simulation's, all in one process)
// neither signs nor checks signatures.
//
// The vector a silo masks is its update's values followed by three counters:
// its weight in units (examples, or 1 with equal weights), the number of its
// values that were clipped to clip_range, and 1 if its update was within
// clip_norm (central DP's adaptive clipping counts these). The orchestrator
// learns each of them only as a sum.
//
// Types make the rule "the orchestrator never holds one silo's update"
// visible: what arrives from a silo is a MaskedVector, which can only be
// added to a MaskedSum; only SecAggRound::Finish() removes masks, and only
// from a sum of at least `threshold` silos.
#ifndef FEDSILO_SECURE_SECAGG_H_
#define FEDSILO_SECURE_SECAGG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/model_state.h"
#include "core/status.h"
#include "secure/certificate_authority.h"
#include "secure/secagg_crypto.h"

namespace fedsilo::v1::secagg {
class Request;
}  // namespace fedsilo::v1::secagg

namespace fedsilo::secure {

inline constexpr int kSecAggCounters = 3;    // weight, clipped values, within clip_norm
inline constexpr int kSecAggMaxSilos = 255;  // Shamir share numbers are bytes

struct SecAggParams {
  int threshold = 2;
  double clip_range = 4.0;
  int bits = 24;
  double max_weight = 0;  // 0: every silo weighs 1
  double clip_norm = 0;   // > 0: L2-clip each update first
  uint64_t length = 0;    // values in the update
};

// The threshold a job asks for, for `sampled` silos: the configured one, or
// two thirds of them (rounded up, at least 2 and at least the job's
// federation.min_silos). Either must be more than half of the silos of a
// round, and silos refuse one below min_silos.
int SecAggThreshold(int configured, int sampled, int min_silos = 2);

// Fixed point: v -> round(v * scale) with scale = (2^(bits-1) - 1) / clip_range.
class FixedPoint {
 public:
  FixedPoint(double clip_range, int bits);
  double scale() const { return scale_; }
  // Encodes weight x clip(v) for every value of `update` into `out` (as
  // two's-complement uint32). Returns how many values were clipped.
  int64_t Encode(const ModelState& update, double weight, uint32_t* out) const;

 private:
  double clip_range_;
  double scale_;
};

// One silo's masked vector as the orchestrator receives it. Uniformly
// distributed whatever the update: it has no accessor for its values.
class MaskedVector {
 public:
  // InvalidArgument naming `source` when `bytes` does not hold `length` values.
  static StatusOr<MaskedVector> Parse(absl::string_view bytes, uint64_t length,
                                      absl::string_view source);
  uint64_t length() const { return values_.size(); }

 private:
  friend class MaskedSum;
  std::vector<uint32_t> values_;
};

// The running sum, mod 2^32, of masked vectors.
class MaskedSum {
 public:
  explicit MaskedSum(uint64_t length) : sum_(length, 0) {}
  // REQUIRES: v.length() equals the sum's length.
  void Add(const MaskedVector& v);
  int count() const { return count_; }

 private:
  friend class SecAggRound;
  std::vector<uint32_t> sum_;
  int count_ = 0;
};

// What a silo proves itself with (its kit's certificate and private key) and
// checks the others against (the federation's CA certificate).
class SecAggIdentity {
 public:
  // InvalidArgument when the key or the CA certificate does not parse.
  // Other silos' certificates in `revoked` (may be null) are refused.
  static StatusOr<std::shared_ptr<const SecAggIdentity>> Create(
      std::string certificate_pem, const std::string& private_key_pem, const std::string& ca_pem,
      std::shared_ptr<const RevocationList> revoked = nullptr);
  const std::string& certificate_pem() const { return certificate_pem_; }
  const MessageSigner& signer() const { return *signer_; }
  const SignatureChecker& checker() const { return *checker_; }

 private:
  SecAggIdentity() = default;
  std::string certificate_pem_;
  std::unique_ptr<MessageSigner> signer_;
  std::unique_ptr<SignatureChecker> checker_;
};

// The signed texts: a silo's advert, and a survivor list (in any order).
std::string AdvertMessage(const std::string& run_id, int round, const std::string& silo,
                          const Key32& share_public_key, const Key32& mask_public_key);
std::string SurvivorsMessage(const std::string& run_id, int round,
                             std::vector<std::string> survivors);

// A silo's reveal of its shares: the sum over `survivors` of the updates of
// `round` of `run_id`, trained from the global model of digest `origin`.
struct SecAggReveal {
  std::string run_id;
  int round = 0;
  std::string origin;
  std::vector<std::string> survivors;  // sorted

  bool operator==(const SecAggReveal& o) const {
    return run_id == o.run_id && round == o.round && origin == o.origin && survivors == o.survivors;
  }
};

// FailedPrecondition when `next` would give a second sum: an earlier reveal
// of the same run and round, or the same origin, over another survivor list.
Status CheckSecondReveal(const std::vector<SecAggReveal>& earlier, const SecAggReveal& next);

// Where a silo keeps the reveals it made (before it makes one).
class SecAggJournal {
 public:
  virtual ~SecAggJournal() = default;
  // Records `reveal` after CheckSecondReveal() against every earlier one;
  // durable when it returns OK. Recording the same reveal again is OK.
  virtual Status Record(const SecAggReveal& reveal) = 0;
};

// The reveals of one SecAggSilo (a simulation's silos; tests).
class MemorySecAggJournal : public SecAggJournal {
 public:
  Status Record(const SecAggReveal& reveal) override;

 private:
  std::vector<SecAggReveal> reveals_;
};

// The silo's side: holds this round's update until it is masked, and answers
// the orchestrator's requests. It checks what it is asked: too few
// participants, a threshold of half of them or less, a changed, unsigned or
// wrongly signed key, a survivor list not signed by `threshold` survivors, or
// a request to reveal both secrets of one silo are refused, and nothing of the
// round is revealed after a refusal. Thread safety: none (one request at a
// time).
class SecAggSilo {
 public:
  explicit SecAggSilo(std::string name) : name_(std::move(name)) {}

  // Signs this silo's adverts and survivor lists, and requires every other
  // silo's to be signed by a silo certificate of the CA. Without one (a
  // simulation) nothing is signed or checked.
  void SetIdentity(std::shared_ptr<const SecAggIdentity> identity) {
    identity_ = std::move(identity);
  }

  // Where reveals are recorded (default: in this object's memory only).
  void SetJournal(std::shared_ptr<SecAggJournal> journal) { journal_ = std::move(journal); }
  // Fewer participants, or a threshold below this, are refused: a sum over
  // fewer silos than the job and the silo's policy ask (min_silos).
  void set_min_silos(int n) { min_silos_ = n; }

  // The update (local minus global) and training examples of `round`, and
  // the digest of the global model it was trained from (empty: the run and
  // round stand for it).
  void SetInput(const std::string& run_id, int round, ModelState update, int64_t examples,
                std::string origin = "");
  // One stage's request (secagg.proto Request) -> its reply. Errors say what
  // was refused; the round's state is then dropped.
  StatusOr<std::string> Handle(const std::string& run_id, int round, absl::string_view request);

 private:
  struct Peer {
    uint32_t share_number = 0;
    Key32 share_public_key{};
    Key32 mask_public_key{};
    std::string certificate_pem;  // with an identity
  };
  StatusOr<std::string> Advertise(const v1::secagg::Request& request);
  StatusOr<std::string> ShareKeys(const v1::secagg::Request& request);
  StatusOr<std::string> MaskedInput(const v1::secagg::Request& request);
  StatusOr<std::string> Consistency(const v1::secagg::Request& request);
  StatusOr<std::string> Unmask(const v1::secagg::Request& request);
  std::string ShareContext(const std::string& from, const std::string& to) const;

  std::string name_;
  std::shared_ptr<const SecAggIdentity> identity_;
  std::shared_ptr<SecAggJournal> journal_ = std::make_shared<MemorySecAggJournal>();
  int min_silos_ = 2;
  std::string run_id_;
  std::string origin_;
  int round_ = 0;
  std::optional<ModelState> update_;
  int64_t examples_ = 0;
  int stage_ = 0;  // the last stage answered: 0 none .. 5 unmask; -1 refused
  SecAggParams params_;
  std::vector<std::string> participants_;
  KeyPair share_keys_;
  KeyPair mask_keys_;
  Key32 self_seed_{};
  std::map<std::string, Peer> peers_;                    // who shared keys (incl. this silo)
  std::map<std::string, std::pair<Key32, Key32>> held_;  // owner -> (mask key, self seed) shares
  std::set<std::string> masked_with_;                    // survivors of stage 2
  std::set<std::string> signed_survivors_;               // the list signed in stage 4
};

// The result of a round: the weighted mean of the updates of the silos that
// stayed, and what else the sum tells.
struct SecAggOutcome {
  ModelState mean;          // layout of the round's model
  int contributors = 0;     // masked inputs in the sum
  double total_weight = 0;  // sum of the weights (examples / max_weight, or 1 each)
  int64_t clipped_values = 0;
  int within_clip_norm = 0;
  // Largest error fixed-point rounding can put on one value of `mean`.
  double quantization_error = 0;
};

// The orchestrator's side of one round. Its stages run in order -- advertise,
// share keys, masked input, consistency, unmask, finish -- each request
// moving to the next stage and each reply taken only in its own stage
// (FailedPrecondition otherwise, naming both stages). Each Accept*() that
// fails drops that silo from the later stages; each stage's request fails (Unavailable, naming
// who left) when fewer than `threshold` silos are left. With RequireSignatures,
// a silo whose advert or survivor signature does not verify is dropped at once
// (an honest orchestrator's courtesy: the silos check them all the same).
class SecAggRound {
 public:
  // InvalidArgument when the parameters cannot hold a sum of `participants`.
  static StatusOr<SecAggRound> Create(std::string run_id, int round, SecAggParams params,
                                      std::vector<std::string> participants,
                                      const ModelState& layout);

  // Adverts and survivor lists must be signed by silo certificates the
  // checker's CA issued to the silos they name.
  void RequireSignatures(std::shared_ptr<const SignatureChecker> checker) {
    checker_ = std::move(checker);
  }

  std::string AdvertiseRequest() const;
  Status AcceptAdvertise(const std::string& silo, absl::string_view reply);

  StatusOr<std::string> ShareKeysRequest();
  Status AcceptShareKeys(const std::string& silo, absl::string_view reply);

  // silo -> request; each holds the shares addressed to that silo.
  StatusOr<std::map<std::string, std::string>> MaskedInputRequests();
  Status AcceptMaskedInput(const std::string& silo, absl::string_view reply);

  // To every silo whose masked input came: the survivors, to sign.
  StatusOr<std::string> ConsistencyRequest();
  Status AcceptConsistency(const std::string& silo, absl::string_view reply);

  // To every survivor that signed: the survivors, the dropped silos and the
  // signatures.
  StatusOr<std::string> UnmaskRequest();
  Status AcceptUnmask(const std::string& silo, absl::string_view reply);

  // Rebuilds the secrets, removes the masks and decodes the mean. Fails
  // (nothing partial is returned) with fewer than `threshold` unmask replies
  // or a secret that does not match its commitment.
  StatusOr<SecAggOutcome> Finish();

  // The silos asked in the current stage.
  const std::vector<std::string>& silos() const { return current_; }

 private:
  SecAggRound(std::string run_id, int round, SecAggParams params,
              std::vector<std::string> participants, const ModelState& layout);
  // The stages, in order; a request moves from one to the next.
  enum class Stage { kAdvertise, kShareKeys, kMaskedInput, kConsistency, kUnmask, kFinished };
  static absl::string_view StageName(Stage stage);
  // OK when the round is in `stage`, for `what` (a reply or a request).
  Status InStage(Stage stage, absl::string_view what) const;
  Status Enough(absl::string_view stage) const;
  uint32_t ShareNumber(const std::string& silo) const;

  std::string run_id_;
  int round_;
  SecAggParams params_;
  std::vector<std::string> participants_;
  ModelState layout_;
  std::vector<std::string> current_;   // silos in the current stage
  std::vector<std::string> answered_;  // silos that answered it
  struct Advert {
    Key32 share_public_key{};
    Key32 mask_public_key{};
    std::string signature;
    std::string certificate_pem;
  };
  std::shared_ptr<const SignatureChecker> checker_;  // null: signatures are not checked here
  std::map<std::string, Advert> keys_;
  std::map<std::string, Key32> commitments_;
  std::map<std::string, std::map<std::string, std::string>> mailbox_;  // to -> from -> ciphertext
  std::vector<std::string> shared_;                                    // U2
  std::vector<std::string> survivors_;                                 // U3
  std::vector<std::string> dropped_;                                   // U2 \ U3
  std::map<std::string, std::string> survivor_signatures_;             // U4 -> signature
  MaskedSum sum_;
  // owner -> share number -> share
  std::map<std::string, std::map<uint8_t, Key32>> self_shares_;
  std::map<std::string, std::map<uint8_t, Key32>> key_shares_;
  Stage stage_ = Stage::kAdvertise;
};

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_SECAGG_H_
