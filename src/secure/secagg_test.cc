#include "secure/secagg.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "fedsilo/v1/secagg.pb.h"
#include "secure/certificate_authority.h"

namespace fedsilo::secure {
namespace {

using ::testing::HasSubstr;

ModelState Update(std::vector<float> w, std::vector<float> b) {
  ModelState s;
  const int64_t nw = static_cast<int64_t>(w.size());
  const int64_t nb = static_cast<int64_t>(b.size());
  EXPECT_TRUE(s.Add(Tensor::FromFloats("w", {nw}, w)).ok());
  EXPECT_TRUE(s.Add(Tensor::FromFloats("b", {nb}, b)).ok());
  return s;
}

ModelState RandomUpdate(std::mt19937& rng, int n) {
  std::normal_distribution<float> normal(0.f, 0.5f);
  std::vector<float> w(static_cast<size_t>(n)), b(3);
  for (float& v : w) v = normal(rng);
  for (float& v : b) v = normal(rng);
  return Update(w, b);
}

namespace pb = fedsilo::v1::secagg;

// A federation CA and identities it issues (or another CA's, for attacks).
struct Identities {
  std::unique_ptr<CertificateAuthority> ca;
  explicit Identities(const std::string& federation = "fed") {
    ca = std::move(CertificateAuthority::Create(federation, 30, std::chrono::system_clock::now()))
             .value();
  }
  std::shared_ptr<const SecAggIdentity> For(const std::string& name,
                                            ParticipantKind kind = ParticipantKind::kSilo,
                                            const Identities* trusting = nullptr) const {
    CertificateRequest request;
    request.name = name;
    request.kind = kind;
    IssuedCertificate issued =
        std::move(ca->Issue(request, std::chrono::system_clock::now())).value();
    return SecAggIdentity::Create(issued.certificate_pem, issued.private_key_pem,
                                  (trusting != nullptr ? trusting : this)->ca->certificate_pem())
        .value();
  }
};

// N silos and the orchestrator's round, all in this process; a silo listed
// in `leave` stops answering from that stage on (1 advertise .. 5 unmask).
// With `sign`, every silo has a certificate of one federation CA; `tamper`
// plays a malicious orchestrator, changing a stage's requests before they go.
struct Federation {
  SecAggParams params;
  std::vector<std::string> names;
  std::vector<ModelState> updates;
  std::vector<int64_t> examples;
  std::map<std::string, std::unique_ptr<SecAggSilo>> silos;
  std::map<std::string, int> leave;
  std::vector<std::string> errors;  // "silo: message" of refused replies
  bool sign = false;
  bool orchestrator_checks = false;  // the round itself checks signatures
  std::unique_ptr<Identities> ids;
  std::function<void(int stage, std::map<std::string, std::string>& requests)> tamper;
  std::map<std::string, std::string> replies_of_stage[6];  // what each silo answered

  explicit Federation(int n, int values = 50, uint32_t seed = 1) {
    std::mt19937 rng(seed);
    for (int i = 0; i < n; ++i) {
      names.push_back(absl::StrCat("silo-", i + 1));
      updates.push_back(RandomUpdate(rng, values));
      examples.push_back(100 + 37 * i);
    }
    params.threshold = SecAggThreshold(0, n);
    params.max_weight = 1000;
  }

  bool Answers(const std::string& silo, int stage) const {
    auto it = leave.find(silo);
    return it == leave.end() || stage < it->second;
  }

  template <typename Accept>
  void Ask(int stage, std::map<std::string, std::string> requests, Accept accept) {
    if (tamper) tamper(stage, requests);
    for (const auto& [silo, request] : requests) {
      if (!Answers(silo, stage) || silos.count(silo) == 0) continue;
      StatusOr<std::string> reply = silos[silo]->Handle("run", round_number, request);
      if (!reply.ok()) {
        errors.push_back(absl::StrCat(silo, ": ", reply.status().message()));
        continue;
      }
      replies_of_stage[stage][silo] = *reply;
      Status s = accept(silo, *reply);
      if (!s.ok()) errors.push_back(absl::StrCat(silo, ": ", s.message()));
    }
  }

  int round_number = 1;
  std::string origin;  // the digest of the model the updates are from

  // Makes the silos (with identities when `sign`); call again for a new round.
  void MakeSilos() {
    if (sign && ids == nullptr) ids = std::make_unique<Identities>();
    for (size_t i = 0; i < names.size(); ++i) {
      silos[names[i]] = std::make_unique<SecAggSilo>(names[i]);
      if (sign) silos[names[i]]->SetIdentity(ids->For(names[i]));
      silos[names[i]]->SetInput("run", round_number, updates[i], examples[i], origin);
    }
  }
  // The same silos (and their records) get the same updates again for
  // `round` (as after training the same task again).
  void Again(int round) {
    round_number = round;
    errors.clear();
    for (auto& stage : replies_of_stage) stage.clear();
    for (size_t i = 0; i < names.size(); ++i) {
      silos[names[i]]->SetInput("run", round_number, updates[i], examples[i], origin);
    }
  }

  StatusOr<SecAggOutcome> Run(std::vector<std::string> participants = {}) {
    if (silos.empty()) MakeSilos();
    if (participants.empty()) participants = names;
    FEDSILO_ASSIGN_OR_RETURN(SecAggRound round, SecAggRound::Create("run", round_number, params,
                                                                    participants, updates[0]));
    if (orchestrator_checks) {
      round.RequireSignatures(SignatureChecker::Create(ids->ca->certificate_pem()).value());
    }
    auto to_all = [&](const std::string& request) {
      std::map<std::string, std::string> all;
      for (const std::string& s : round.silos()) all[s] = request;
      return all;
    };
    Ask(1, to_all(round.AdvertiseRequest()),
        [&](auto& s, auto& r) { return round.AcceptAdvertise(s, r); });
    FEDSILO_ASSIGN_OR_RETURN(std::string share, round.ShareKeysRequest());
    Ask(2, to_all(share), [&](auto& s, auto& r) { return round.AcceptShareKeys(s, r); });
    FEDSILO_ASSIGN_OR_RETURN(auto masked, round.MaskedInputRequests());
    Ask(3, masked, [&](auto& s, auto& r) { return round.AcceptMaskedInput(s, r); });
    FEDSILO_ASSIGN_OR_RETURN(std::string consistency, round.ConsistencyRequest());
    Ask(4, to_all(consistency), [&](auto& s, auto& r) { return round.AcceptConsistency(s, r); });
    FEDSILO_ASSIGN_OR_RETURN(std::string unmask, round.UnmaskRequest());
    Ask(5, to_all(unmask), [&](auto& s, auto& r) { return round.AcceptUnmask(s, r); });
    return round.Finish();
  }

  // The plain weighted mean over the silos in `included`.
  std::vector<float> PlainMean(const std::vector<std::string>& included) const {
    std::vector<double> sum;
    double weights = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      if (std::find(included.begin(), included.end(), names[i]) == included.end()) continue;
      const double w = static_cast<double>(examples[i]);
      size_t at = 0;
      for (const Tensor& t : updates[i].tensors()) {
        for (float v : t.floats()) {
          if (sum.size() <= at) sum.push_back(0);
          sum[at++] +=
              w * std::clamp(static_cast<double>(v), -params.clip_range, params.clip_range);
        }
      }
      weights += w;
    }
    std::vector<float> mean;
    for (double s : sum) mean.push_back(static_cast<float>(s / weights));
    return mean;
  }
};

std::vector<float> Flatten(const ModelState& s) {
  std::vector<float> out;
  for (const Tensor& t : s.tensors()) out.insert(out.end(), t.floats().begin(), t.floats().end());
  return out;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double bound) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
  EXPECT_LE(worst, bound + 1e-6);
  EXPECT_GT(bound, 0);
}

TEST(SecAggTest, TheUnmaskedSumIsThePlainWeightedMeanWithinTheQuantizationError) {
  Federation f(6, 200);
  f.params.bits = 16;  // a coarse grid, so that the bound is what is tested
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(f.errors.empty()) << f.errors[0];
  EXPECT_EQ(out->contributors, 6);
  EXPECT_DOUBLE_EQ(out->total_weight, (100 + 137 + 174 + 211 + 248 + 285) / 1000.0);
  // Each silo rounds to half a step of weight x value; the mean divides by the weights.
  const double step = f.params.clip_range / ((1 << 15) - 1);
  EXPECT_NEAR(out->quantization_error, 0.5 * 6 * step / out->total_weight, 1e-12);
  ExpectNear(Flatten(out->mean), f.PlainMean(f.names), out->quantization_error);
  // ... and the bound is not loose by orders of magnitude.
  Federation fine(6, 200);
  fine.params.bits = 24;
  StatusOr<SecAggOutcome> precise = fine.Run();
  ASSERT_TRUE(precise.ok());
  EXPECT_LT(precise->quantization_error, out->quantization_error / 100);
}

TEST(SecAggTest, FixedPointRoundsHalfAwayFromZeroLikeLlround) {
  // With bits 8 and clip_range 127 the scale is 1, so a weight picks the value
  // to round: ties, values next to ties, and the largest double below 0.5.
  const FixedPoint fixed(127, 8);
  ASSERT_EQ(fixed.scale(), 1.0);
  const std::vector<double> targets = {0.5,   -0.5,  1.5,   -2.5,  2.5,
                                       0.49999999999999994, -0.49999999999999994,
                                       3.4999999, -3.5000001, 126.5, -126.5, 0.0};
  std::vector<float> w;
  for (double t : targets) w.push_back(t >= 0 ? 1.f : -1.f);
  for (size_t i = 0; i < targets.size(); ++i) {
    // One value at a time: weight x 1 or weight x -1 gives the target exactly.
    ModelState one;
    ASSERT_TRUE(one.Add(Tensor::FromFloats("w", {1}, {w[i]})).ok());
    uint32_t out = 0;
    fixed.Encode(one, std::fabs(targets[i]), &out);
    EXPECT_EQ(static_cast<int32_t>(out), std::llround(targets[i])) << targets[i];
  }
}

TEST(SecAggTest, ClippedValuesAreCountedOnlyAsASum) {
  Federation f(3, 20);
  f.params.clip_range = 0.25;
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  int64_t clipped = 0;
  for (const ModelState& u : f.updates) {
    for (float v : Flatten(u)) clipped += std::fabs(v) > 0.25;
  }
  EXPECT_GT(clipped, 0);
  EXPECT_EQ(out->clipped_values, clipped);
  ExpectNear(Flatten(out->mean), f.PlainMean(f.names), out->quantization_error);
}

TEST(SecAggTest, SilosThatNeverSendTheirInputAreLeftOut) {
  Federation f(6);
  f.leave = {{"silo-2", 1}, {"silo-5", 3}};  // silent from the start; left after sharing keys
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->contributors, 4);
  ExpectNear(Flatten(out->mean), f.PlainMean({"silo-1", "silo-3", "silo-4", "silo-6"}),
             out->quantization_error);
}

TEST(SecAggTest, SilosThatLeaveAfterSendingTheirMaskedInputStillCount) {
  Federation f(6);
  f.leave = {{"silo-1", 4}, {"silo-6", 4}};  // sent masked input, then died
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->contributors, 6);
  ExpectNear(Flatten(out->mean), f.PlainMean(f.names), out->quantization_error);
}

TEST(SecAggTest, BothKindsOfDropoutInOneRound) {
  Federation f(7);
  f.params.threshold = 4;
  f.leave = {{"silo-3", 3}, {"silo-7", 4}, {"silo-4", 2}};
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->contributors, 5);
  ExpectNear(Flatten(out->mean), f.PlainMean({"silo-1", "silo-2", "silo-5", "silo-6", "silo-7"}),
             out->quantization_error);
}

TEST(SecAggTest, BelowTheThresholdAtAnyStageTheRoundFailsWithoutAnAggregate) {
  for (int stage = 1; stage <= 5; ++stage) {
    Federation f(5);  // threshold 4
    ASSERT_EQ(f.params.threshold, 4);
    f.leave = {{"silo-2", stage}, {"silo-4", stage}};
    StatusOr<SecAggOutcome> out = f.Run();
    ASSERT_FALSE(out.ok()) << "stage " << stage;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("below the threshold of 4"));
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("silo-2"));
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("no aggregate is applied"));
  }
}

// What one silo sends is uniformly distributed whatever its update: a
// chi-squared test on the top byte of the masked values of a constant update.
TEST(SecAggTest, AMaskedInputOfAConstantUpdateLooksUniform) {
  constexpr int kValues = 100000;
  for (float constant : {0.0f, 0.5f, -3.0f}) {
    std::vector<std::string> names = {"a", "b", "c"};
    std::map<std::string, std::unique_ptr<SecAggSilo>> silos;
    SecAggParams params;
    params.threshold = 2;
    params.max_weight = 0;
    const ModelState update = Update(std::vector<float>(kValues, constant), {constant});
    for (const std::string& n : names) {
      silos[n] = std::make_unique<SecAggSilo>(n);
      silos[n]->SetInput("run", 1, update, 10);
    }
    StatusOr<SecAggRound> round = SecAggRound::Create("run", 1, params, names, update);
    ASSERT_TRUE(round.ok());
    for (const std::string& n : names) {
      ASSERT_TRUE(
          round->AcceptAdvertise(n, *silos[n]->Handle("run", 1, round->AdvertiseRequest())).ok());
    }
    const std::string share = *round->ShareKeysRequest();
    for (const std::string& n : names) {
      ASSERT_TRUE(round->AcceptShareKeys(n, *silos[n]->Handle("run", 1, share)).ok());
    }
    auto requests = *round->MaskedInputRequests();
    fedsilo::v1::secagg::MaskedInputReply reply;
    ASSERT_TRUE(reply.ParseFromString(*silos["a"]->Handle("run", 1, requests["a"])));
    ASSERT_EQ(reply.masked().size(), (kValues + 1 + kSecAggCounters) * 4u);
    std::vector<double> counts(256, 0);
    for (size_t i = 3; i < reply.masked().size(); i += 4) {
      counts[static_cast<unsigned char>(reply.masked()[i])] += 1;  // top byte (little-endian)
    }
    const double expected = (kValues + 1 + kSecAggCounters) / 256.0;
    double chi2 = 0;
    for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
    // The masks come from the OS, so the test cannot fix a seed; its bound is
    // set for false alarms instead. 255 degrees of freedom: P(chi2 > 450) =
    // 5.8e-13 (the regularized upper incomplete gamma Q(127.5, 225)), below
    // 2e-12 for the three constants together. Unmasked, every value would fall
    // in one or two bins (chi2 ~ 25 million); a mask that left one bit of the
    // top byte unset would give chi2 ~ 100,000.
    EXPECT_LT(chi2, 450) << "constant " << constant;
  }
}

TEST(SecAggTest, EqualWeightsAndClipNormForCentralDp) {
  Federation f(4, 30);
  f.params.max_weight = 0;   // every silo weighs 1
  f.params.clip_norm = 1.0;  // the updates have norm ~2.8
  f.updates[2] = Update(std::vector<float>(30, 0.01f), {0.f, 0.f, 0.f});  // norm 0.055
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_DOUBLE_EQ(out->total_weight, 4);
  EXPECT_EQ(out->within_clip_norm, 1);
  std::vector<float> want(33, 0.f);
  for (const ModelState& u : f.updates) {
    std::vector<float> v = Flatten(u);
    double norm = 0;
    for (float x : v) norm += x * x;
    norm = std::sqrt(norm);
    for (size_t i = 0; i < v.size(); ++i) want[i] += v[i] * std::min(1.0, 1.0 / norm) / 4;
  }
  ExpectNear(Flatten(out->mean), want, out->quantization_error + 1e-6);
}

TEST(SecAggTest, ASiloRefusesToRevealBothSecretsOfOneSilo) {
  SecAggSilo silo("a");
  ModelState u = Update({1, 2}, {3});
  silo.SetInput("run", 1, u, 5);
  SecAggParams params;
  params.threshold = 2;
  StatusOr<SecAggRound> round = SecAggRound::Create("run", 1, params, {"a", "b"}, u);
  SecAggSilo b("b");
  b.SetInput("run", 1, u, 5);
  ASSERT_TRUE(round->AcceptAdvertise("a", *silo.Handle("run", 1, round->AdvertiseRequest())).ok());
  ASSERT_TRUE(round->AcceptAdvertise("b", *b.Handle("run", 1, round->AdvertiseRequest())).ok());
  const std::string share = *round->ShareKeysRequest();
  ASSERT_TRUE(round->AcceptShareKeys("a", *silo.Handle("run", 1, share)).ok());
  ASSERT_TRUE(round->AcceptShareKeys("b", *b.Handle("run", 1, share)).ok());
  auto requests = *round->MaskedInputRequests();
  ASSERT_TRUE(round->AcceptMaskedInput("a", *silo.Handle("run", 1, requests["a"])).ok());
  ASSERT_TRUE(round->AcceptMaskedInput("b", *b.Handle("run", 1, requests["b"])).ok());
  const std::string consistency = *round->ConsistencyRequest();
  ASSERT_TRUE(round->AcceptConsistency("a", *silo.Handle("run", 1, consistency)).ok());
  ASSERT_TRUE(round->AcceptConsistency("b", *b.Handle("run", 1, consistency)).ok());
  // "b" listed both as a survivor and as dropped.
  fedsilo::v1::secagg::Request bad;
  bad.mutable_unmask()->add_survivors("a");
  bad.mutable_unmask()->add_survivors("b");
  bad.mutable_unmask()->add_dropped("b");
  StatusOr<std::string> reply = silo.Handle("run", 1, bad.SerializeAsString());
  ASSERT_FALSE(reply.ok());
  EXPECT_THAT(std::string(reply.status().message()), HasSubstr("must split"));
  // The refusal ends the round for this silo.
  EXPECT_FALSE(silo.Handle("run", 1, *round->UnmaskRequest()).ok());
}

// The orchestrator's side keeps its own stage order: a request or a reply
// out of its stage is refused naming both stages and changes nothing, and a
// round finishes once.
TEST(SecAggTest, TheOrchestratorsRoundTakesEachStageInOrderOnly) {
  ModelState u = Update({1, 2}, {3});
  SecAggParams params;
  params.threshold = 2;
  StatusOr<SecAggRound> round = SecAggRound::Create("run", 1, params, {"a", "b"}, u);
  ASSERT_TRUE(round.ok()) << round.status();
  SecAggSilo a("a"), b("b");
  a.SetInput("run", 1, u, 5);
  b.SetInput("run", 1, u, 5);
  const auto refused = [](const Status& s, const std::string& stage) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("and the round is at the " + stage + " stage"));
  };
  refused(round->MaskedInputRequests().status(), "advertise");
  refused(round->Finish().status(), "advertise");
  const std::string advertise = round->AdvertiseRequest();
  const std::string advert_a = *a.Handle("run", 1, advertise);
  refused(round->AcceptShareKeys("a", advert_a), "advertise");
  ASSERT_TRUE(round->AcceptAdvertise("a", advert_a).ok());
  ASSERT_TRUE(round->AcceptAdvertise("b", *b.Handle("run", 1, advertise)).ok());
  const std::string share = *round->ShareKeysRequest();
  refused(round->ShareKeysRequest().status(), "share keys");  // not twice
  refused(round->AcceptAdvertise("a", advert_a), "share keys");  // an advert, too late
  ASSERT_TRUE(round->AcceptShareKeys("a", *a.Handle("run", 1, share)).ok());
  ASSERT_TRUE(round->AcceptShareKeys("b", *b.Handle("run", 1, share)).ok());
  refused(round->ConsistencyRequest().status(), "share keys");
  auto masked = *round->MaskedInputRequests();
  ASSERT_TRUE(round->AcceptMaskedInput("a", *a.Handle("run", 1, masked["a"])).ok());
  ASSERT_TRUE(round->AcceptMaskedInput("b", *b.Handle("run", 1, masked["b"])).ok());
  refused(round->UnmaskRequest().status(), "masked input");
  const std::string consistency = *round->ConsistencyRequest();
  ASSERT_TRUE(round->AcceptConsistency("a", *a.Handle("run", 1, consistency)).ok());
  ASSERT_TRUE(round->AcceptConsistency("b", *b.Handle("run", 1, consistency)).ok());
  refused(round->Finish().status(), "consistency");
  const std::string unmask = *round->UnmaskRequest();
  ASSERT_TRUE(round->AcceptUnmask("a", *a.Handle("run", 1, unmask)).ok());
  ASSERT_TRUE(round->AcceptUnmask("b", *b.Handle("run", 1, unmask)).ok());
  StatusOr<SecAggOutcome> outcome = round->Finish();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->contributors, 2);
  refused(round->Finish().status(), "finished");
}

TEST(SecAggTest, ASiloRefusesOutOfOrderRequestsAndTooFewParticipants) {
  SecAggSilo silo("a");
  ModelState u = Update({1, 2}, {3});
  silo.SetInput("run", 2, u, 5);
  SecAggParams params;
  params.threshold = 2;
  auto round = SecAggRound::Create("run", 2, params, {"a", "b"}, u);
  // A request of another round.
  EXPECT_THAT(std::string(silo.Handle("run", 1, round->AdvertiseRequest()).status().message()),
              HasSubstr("out-of-order"));
  silo.SetInput("run", 2, u, 5);
  fedsilo::v1::secagg::Request alone;
  alone.mutable_advertise()->mutable_params()->set_threshold(1);
  alone.mutable_advertise()->mutable_params()->set_bits(24);
  alone.mutable_advertise()->mutable_params()->set_clip_range(1);
  alone.mutable_advertise()->mutable_params()->set_length(3);
  alone.mutable_advertise()->add_participants("a");
  EXPECT_THAT(std::string(silo.Handle("run", 2, alone.SerializeAsString()).status().message()),
              HasSubstr("threshold 1"));
}

TEST(SecAggTest, AWrongShareIsCaughtByTheCommitment) {
  Federation f(3);
  f.params.threshold = 3;
  // Run by hand to tamper with one unmask reply.
  for (size_t i = 0; i < f.names.size(); ++i) {
    f.silos[f.names[i]] = std::make_unique<SecAggSilo>(f.names[i]);
    f.silos[f.names[i]]->SetInput("run", 1, f.updates[i], f.examples[i]);
  }
  auto round = SecAggRound::Create("run", 1, f.params, f.names, f.updates[0]);
  for (auto& n : f.names) {
    ASSERT_TRUE(
        round->AcceptAdvertise(n, *f.silos[n]->Handle("run", 1, round->AdvertiseRequest())).ok());
  }
  const std::string share = *round->ShareKeysRequest();
  for (auto& n : f.names)
    ASSERT_TRUE(round->AcceptShareKeys(n, *f.silos[n]->Handle("run", 1, share)).ok());
  auto masked = *round->MaskedInputRequests();
  for (auto& n : f.names) {
    ASSERT_TRUE(round->AcceptMaskedInput(n, *f.silos[n]->Handle("run", 1, masked[n])).ok());
  }
  const std::string consistency = *round->ConsistencyRequest();
  for (auto& n : f.names) {
    ASSERT_TRUE(round->AcceptConsistency(n, *f.silos[n]->Handle("run", 1, consistency)).ok());
  }
  const std::string unmask = *round->UnmaskRequest();
  for (auto& n : f.names) {
    fedsilo::v1::secagg::UnmaskReply reply;
    reply.ParseFromString(*f.silos[n]->Handle("run", 1, unmask));
    if (n == "silo-2") (*reply.mutable_self_mask_shares(0)->mutable_share())[0] ^= 1;
    ASSERT_TRUE(round->AcceptUnmask(n, reply.SerializeAsString()).ok());
  }
  StatusOr<SecAggOutcome> out = round->Finish();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("does not match its commitment"));
}

TEST(SecAggTest, TooManySilosForTheBitsIsAClearError) {
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) names.push_back(absl::StrCat("s", i));
  SecAggParams params;
  ModelState u = Update({1}, {1});
  EXPECT_THAT(std::string(SecAggRound::Create("r", 1, params, names, u).status().message()),
              HasSubstr("at most 255 silos"));
  names.resize(200);
  params.threshold = 101;
  params.bits = 28;
  EXPECT_THAT(std::string(SecAggRound::Create("r", 1, params, names, u).status().message()),
              HasSubstr("lower privacy.secure_aggregation.bits to at most 24"));
}

TEST(SecAggTest, DefaultThresholdIsTwoThirdsAndAtLeastTwo) {
  EXPECT_EQ(SecAggThreshold(0, 2), 2);
  EXPECT_EQ(SecAggThreshold(0, 3), 2);
  EXPECT_EQ(SecAggThreshold(0, 10), 7);
  EXPECT_EQ(SecAggThreshold(0, 9), 6);
  EXPECT_EQ(SecAggThreshold(5, 10), 5);
  // At least the job's federation.min_silos, at most the silos sampled.
  EXPECT_EQ(SecAggThreshold(0, 3, 3), 3);
  EXPECT_EQ(SecAggThreshold(0, 10, 9), 9);
  EXPECT_EQ(SecAggThreshold(0, 10, 12), 10);
}

TEST(SecAggTest, ASiloWithMoreExamplesThanMaxWeightIsRefusedNamingTheKey) {
  // Its weight would pass 1 and its values could overflow the fixed-point
  // range the orchestrator sized the round for.
  Federation f(6);  // max_weight 1000, threshold 4
  f.examples[1] = 1001;
  f.examples[3] = 1000;  // exactly max_weight: weight 1, accepted
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_THAT(f.errors[0], HasSubstr("silo-2: "));
  EXPECT_THAT(f.errors[0], HasSubstr("more examples than privacy.secure_aggregation.max_weight"));
  EXPECT_THAT(f.errors[0], HasSubstr("(1000)"));
  // Refused at the advert: it sent no keys, so it is in no later stage.
  EXPECT_EQ(f.replies_of_stage[1].count("silo-2"), 0u);
  EXPECT_EQ(out->contributors, 5);
  const std::vector<std::string> others = {"silo-1", "silo-3", "silo-4", "silo-5", "silo-6"};
  EXPECT_DOUBLE_EQ(out->total_weight, (100 + 174 + 1000 + 248 + 285) / 1000.0);
  ExpectNear(Flatten(out->mean), f.PlainMean(others), out->quantization_error);
}

TEST(SecAggTest, KeysAreFreshEachRound) {
  // Keys kept across rounds would let masks and shares of one round be
  // combined with another's. The same silo objects answer two rounds.
  Federation f(3);
  f.sign = true;
  ASSERT_TRUE(f.Run().ok());
  std::map<std::string, pb::AdvertiseReply> first;
  for (const auto& [silo, reply] : f.replies_of_stage[1]) {
    ASSERT_TRUE(first[silo].ParseFromString(reply));
  }
  ASSERT_EQ(first.size(), 3u);
  // The self-mask seed too: its commitment is a hash of it alone.
  std::map<std::string, std::string> first_commitment;
  for (const auto& [silo, reply] : f.replies_of_stage[2]) {
    pb::ShareKeysReply r;
    ASSERT_TRUE(r.ParseFromString(reply));
    first_commitment[silo] = r.self_mask_commitment();
  }
  ASSERT_EQ(first_commitment.size(), 3u);
  f.Again(2);
  ASSERT_TRUE(f.Run().ok()) << (f.errors.empty() ? "" : f.errors[0]);
  std::set<std::string> seen;
  for (const auto& [silo, reply] : f.replies_of_stage[1]) {
    pb::AdvertiseReply second;
    ASSERT_TRUE(second.ParseFromString(reply));
    EXPECT_NE(second.share_public_key(), first[silo].share_public_key()) << silo;
    EXPECT_NE(second.mask_public_key(), first[silo].mask_public_key()) << silo;
    seen.insert(second.share_public_key());
    seen.insert(second.mask_public_key());
    seen.insert(first[silo].share_public_key());
    seen.insert(first[silo].mask_public_key());
  }
  // No key is reused anywhere: across rounds, silos, or the two roles.
  EXPECT_EQ(seen.size(), 12u);
  ASSERT_EQ(f.replies_of_stage[2].size(), 3u);
  for (const auto& [silo, reply] : f.replies_of_stage[2]) {
    pb::ShareKeysReply r;
    ASSERT_TRUE(r.ParseFromString(reply));
    EXPECT_NE(r.self_mask_commitment(), first_commitment[silo]) << silo;
  }
}

// --- against a malicious orchestrator ----------------------------------------

// Every error of `f` mentions `what`, and there is one per silo in `silos`.
void ExpectRefusedBy(const Federation& f, const std::vector<std::string>& silos,
                     const std::string& what) {
  for (const std::string& s : silos) {
    bool found = false;
    for (const std::string& e : f.errors) {
      if (e.rfind(s + ": ", 0) == 0) {
        found = true;
        EXPECT_THAT(e, HasSubstr(what));
      }
    }
    EXPECT_TRUE(found) << s << " did not refuse";
  }
}

TEST(SecAggAttackTest, SignedRoundsAggregateLikeUnsignedOnes) {
  Federation f(5, 40);
  f.sign = true;
  f.orchestrator_checks = true;
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(f.errors.empty()) << f.errors[0];
  EXPECT_EQ(out->contributors, 5);
  ExpectNear(Flatten(out->mean), f.PlainMean(f.names), out->quantization_error);
  // Dropouts at every stage still work with signatures.
  Federation d(6, 40);
  d.sign = true;
  d.orchestrator_checks = true;
  d.leave = {{"silo-2", 3}, {"silo-6", 5}};
  StatusOr<SecAggOutcome> dropped = d.Run();
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  ExpectNear(Flatten(dropped->mean),
             d.PlainMean({"silo-1", "silo-3", "silo-4", "silo-5", "silo-6"}),
             dropped->quantization_error);
}

TEST(SecAggAttackTest, ASwappedKeyIsRefusedByEverySiloBeforeAnyShareIsSent) {
  Federation f(4);
  f.sign = true;
  const KeyPair mine = NewKeyPair();  // the orchestrator's own key
  f.tamper = [&](int stage, std::map<std::string, std::string>& requests) {
    if (stage != 2) return;
    for (auto& [silo, request] : requests) {
      pb::Request r;
      ASSERT_TRUE(r.ParseFromString(request));
      for (pb::ParticipantKeys& k : *r.mutable_share_keys()->mutable_keys()) {
        if (k.silo() == "silo-3") k.set_mask_public_key(ToBytes(mine.public_key));
      }
      request = r.SerializeAsString();
    }
  };
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_FALSE(out.ok());
  ExpectRefusedBy(f, {"silo-1", "silo-2", "silo-4"}, "signature of 'silo-3' does not verify");
  ExpectRefusedBy(f, {"silo-3"}, "own public keys are missing or changed");
  // Nothing was shared: no silo answered stage 2.
  EXPECT_TRUE(f.replies_of_stage[2].empty());
  // And a silo that refused answers nothing more in the round.
  pb::Request unmask;
  unmask.mutable_unmask()->add_survivors("silo-1");
  EXPECT_THAT(
      std::string(
          f.silos["silo-1"]->Handle("run", 1, unmask.SerializeAsString()).status().message()),
      HasSubstr("out-of-order"));
}

TEST(SecAggAttackTest, AnAdvertReplayedFromAnotherRoundIsRefused) {
  Federation f(3);
  f.sign = true;
  ASSERT_TRUE(f.Run().ok());
  const std::string old_advert = f.replies_of_stage[1]["silo-2"];
  // Round 2: the orchestrator shows silo-2's round-1 keys (signed, but for round 1).
  f.round_number = 2;
  f.MakeSilos();
  f.silos.erase("silo-2");  // it is the orchestrator that answers for it
  f.tamper = [&](int stage, std::map<std::string, std::string>& requests) {
    if (stage != 2) return;
    pb::AdvertiseReply a;
    ASSERT_TRUE(a.ParseFromString(old_advert));
    for (auto& [silo, request] : requests) {
      pb::Request r;
      ASSERT_TRUE(r.ParseFromString(request));
      pb::ParticipantKeys* k = r.mutable_share_keys()->add_keys();
      k->set_silo("silo-2");
      k->set_share_number(2);
      k->set_share_public_key(a.share_public_key());
      k->set_mask_public_key(a.mask_public_key());
      k->set_signature(a.signature());
      k->set_certificate(a.certificate());
      request = r.SerializeAsString();
    }
  };
  f.errors.clear();
  EXPECT_FALSE(f.Run().ok());
  ExpectRefusedBy(f, {"silo-1", "silo-3"}, "signature of 'silo-2' does not verify");
}

// The orchestrator adds a participant of its own, answering for it with a
// SecAggSilo holding `identity` (null: unsigned).
void ExpectFakeParticipantRefused(std::shared_ptr<const SecAggIdentity> identity,
                                  const std::string& what, Federation& f) {
  f.params.threshold = 3;  // of 4 participants
  f.MakeSilos();
  auto fake = std::make_unique<SecAggSilo>("mallory");
  if (identity != nullptr) fake->SetIdentity(identity);
  fake->SetInput("run", 1, f.updates[0], 1);
  f.silos["mallory"] = std::move(fake);
  std::vector<std::string> participants = f.names;
  participants.push_back("mallory");
  EXPECT_FALSE(f.Run(participants).ok());
  ExpectRefusedBy(f, f.names, what);
  for (const std::string& n : f.names) EXPECT_EQ(f.replies_of_stage[2].count(n), 0u) << n;
}

TEST(SecAggAttackTest, AParticipantWithoutASiloCertificateOfTheCaIsRefused) {
  {
    Federation f(3);
    f.sign = true;
    ExpectFakeParticipantRefused(nullptr, "'mallory' sent no signature", f);
  }
  {
    Federation f(3);
    f.sign = true;
    f.ids = std::make_unique<Identities>();
    // A user certificate of the same CA: not a silo.
    ExpectFakeParticipantRefused(f.ids->For("mallory", ParticipantKind::kUser), "belongs to user",
                                 f);
  }
  {
    Federation f(3);
    f.sign = true;
    f.ids = std::make_unique<Identities>();
    // A silo certificate of the orchestrator's own CA.
    Identities other("fed");
    ExpectFakeParticipantRefused(other.For("mallory", ParticipantKind::kSilo, f.ids.get()),
                                 "does not verify", f);
  }
  {
    Federation f(3);
    f.sign = true;
    f.ids = std::make_unique<Identities>();
    // Another silo's genuine certificate, under a name it does not bear.
    ExpectFakeParticipantRefused(f.ids->For("silo-2"), "belongs to silo 'silo-2'", f);
  }
}

TEST(SecAggAttackTest, TwoSurvivorListsCannotBothGatherEnoughSignatures) {
  // 5 silos, threshold 3. The orchestrator wants silo-1's self mask (listing
  // it as a survivor) from some silos and its mask key (listing it as
  // dropped) from others: list A to silo-1..3, list B to silo-4 and silo-5.
  const std::vector<std::string> list_a = {"silo-1", "silo-2", "silo-3"};
  const std::vector<std::string> list_b = {"silo-2", "silo-4", "silo-5"};
  for (bool forge : {false, true}) {
    Federation f(5);
    f.sign = true;
    f.params.threshold = 3;
    auto shown_b = [](const std::string& silo) { return silo == "silo-4" || silo == "silo-5"; };
    f.tamper = [&](int stage, std::map<std::string, std::string>& requests) {
      if (stage == 4) {
        for (auto& [silo, request] : requests) {
          pb::Request r;
          for (const std::string& s : shown_b(silo) ? list_b : list_a) {
            r.mutable_consistency()->add_survivors(s);
          }
          request = r.SerializeAsString();
        }
      }
      if (stage != 5) return;
      std::map<std::string, std::string> signatures;  // what each signed
      for (const auto& [silo, reply] : f.replies_of_stage[4]) {
        pb::ConsistencyReply c;
        ASSERT_TRUE(c.ParseFromString(reply));
        signatures[silo] = c.signature();
      }
      ASSERT_EQ(signatures.size(), 5u);
      for (auto& [silo, request] : requests) {
        const auto& list = shown_b(silo) ? list_b : list_a;
        pb::Request r;
        pb::UnmaskRequest* u = r.mutable_unmask();
        for (const std::string& s : f.names) {
          if (std::find(list.begin(), list.end(), s) != list.end()) {
            u->add_survivors(s);
          } else {
            u->add_dropped(s);
          }
        }
        // The signatures of the list's silos -- for list B only silo-4's and
        // silo-5's are over it; with `forge`, silo-2's (over list A) too.
        for (const auto& [signer, signature] : signatures) {
          if (std::find(list.begin(), list.end(), signer) == list.end()) continue;
          if (shown_b(silo) && signer == "silo-2" && !forge) continue;
          pb::SurvivorSignature* sig = u->add_signatures();
          sig->set_silo(signer);
          sig->set_signature(signature);
        }
        request = r.SerializeAsString();
      }
    };
    EXPECT_FALSE(f.Run().ok());
    ExpectRefusedBy(f, {"silo-4", "silo-5"},
                    forge ? "signature of 'silo-2' does not verify"
                          : "only 2 survivors signed the survivor list, below the threshold 3");
    // silo-1's mask key went nowhere: the silos shown list B revealed nothing.
    EXPECT_EQ(f.replies_of_stage[5].count("silo-4"), 0u);
    EXPECT_EQ(f.replies_of_stage[5].count("silo-5"), 0u);
    EXPECT_EQ(f.replies_of_stage[5].size(), 3u);  // list A's silos, honestly
  }
}

TEST(SecAggAttackTest, ASiloShownAnotherListThanTheOneItSignedRevealsNothing) {
  Federation f(4);
  f.sign = true;
  f.tamper = [&](int stage, std::map<std::string, std::string>& requests) {
    if (stage != 5) return;
    pb::Request r;
    ASSERT_TRUE(r.ParseFromString(requests["silo-1"]));
    // silo-3 moved from the survivors to the dropped.
    pb::UnmaskRequest* u = r.mutable_unmask();
    u->clear_survivors();
    for (const char* s : {"silo-1", "silo-2", "silo-4"}) u->add_survivors(s);
    u->add_dropped("silo-3");
    requests["silo-1"] = r.SerializeAsString();
  };
  StatusOr<SecAggOutcome> out = f.Run();
  ExpectRefusedBy(f, {"silo-1"}, "differ from the list this silo signed");
  EXPECT_EQ(f.replies_of_stage[5].count("silo-1"), 0u);
  // The three told the truth still make the threshold: the round completes.
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->contributors, 4);
}

TEST(SecAggAttackTest, TooFewSurvivorSignaturesAreRefused) {
  Federation f(5);  // threshold 4
  f.sign = true;
  f.tamper = [&](int stage, std::map<std::string, std::string>& requests) {
    if (stage != 5) return;
    for (auto& [silo, request] : requests) {
      pb::Request r;
      ASSERT_TRUE(r.ParseFromString(request));
      auto* sigs = r.mutable_unmask()->mutable_signatures();
      sigs->DeleteSubrange(0, 3);  // keep silo-4's and silo-5's
      request = r.SerializeAsString();
    }
  };
  EXPECT_FALSE(f.Run().ok());
  ExpectRefusedBy(f, f.names, "survivors signed the survivor list, below the threshold 4");
  EXPECT_TRUE(f.replies_of_stage[5].empty());
}

TEST(SecAggAttackTest, AThresholdOfHalfTheSilosOrLessIsRefused) {
  Federation f(4);
  f.params.threshold = 2;
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()),
              HasSubstr("threshold 2 is not more than half of the 4 silos"));
  // A silo asked for it by an orchestrator that skips its own check refuses too.
  SecAggSilo silo("a");
  ModelState u = Update({1, 2}, {3});
  silo.SetInput("run", 1, u, 5);
  pb::Request r;
  pb::AdvertiseRequest* a = r.mutable_advertise();
  a->mutable_params()->set_threshold(2);
  a->mutable_params()->set_bits(24);
  a->mutable_params()->set_clip_range(1);
  a->mutable_params()->set_length(3);
  for (const char* n : {"a", "b", "c", "d"}) a->add_participants(n);
  EXPECT_THAT(std::string(silo.Handle("run", 1, r.SerializeAsString()).status().message()),
              HasSubstr("must be at least 3"));
}

TEST(SecAggAttackTest, ARoundAskedAgainOverOtherSilosRevealsNothing) {
  // The orchestrator has the sum of all five, then asks the same round again
  // and claims silo-5 left before its masked input: the difference of the two
  // sums would be silo-5's update.
  Federation f(5);  // threshold 4
  f.sign = true;
  f.origin = "sha256:model-of-round-1";
  ASSERT_TRUE(f.Run().ok());
  f.Again(1);
  f.leave = {{"silo-5", 3}};
  EXPECT_FALSE(f.Run().ok());
  ExpectRefusedBy(f, {"silo-1", "silo-2", "silo-3", "silo-4"},
                  "already revealed its shares for round 1 of job 'run' over the silos [silo-1, "
                  "silo-2, silo-3, silo-4, silo-5]");
  EXPECT_TRUE(f.replies_of_stage[5].empty());

  // Under another round number, updates from the same model are refused too.
  f.Again(2);
  EXPECT_FALSE(f.Run().ok());
  ExpectRefusedBy(f, {"silo-1", "silo-2", "silo-3", "silo-4"}, "from the same global model");
  EXPECT_TRUE(f.replies_of_stage[5].empty());
}

TEST(SecAggAttackTest, ARoundAskedAgainOverTheSameSilosGoesAhead) {
  // An orchestrator that restarted mid-round asks it again: the same sum.
  Federation f(4);
  f.origin = "sha256:model";
  StatusOr<SecAggOutcome> first = f.Run();
  ASSERT_TRUE(first.ok()) << first.status();
  f.Again(1);
  StatusOr<SecAggOutcome> again = f.Run();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(Flatten(again->mean), Flatten(first->mean));
  // A silo that never revealed for the round can still join a list without
  // one that did: the journal is per silo.
  MemorySecAggJournal journal;
  ASSERT_TRUE(journal.Record({"run", 1, "m", {"a", "b", "c"}}).ok());
  EXPECT_TRUE(journal.Record({"run", 1, "m", {"a", "b", "c"}}).ok());
  EXPECT_FALSE(journal.Record({"run", 1, "m2", {"a", "b"}}).ok());
  EXPECT_FALSE(journal.Record({"run", 2, "m", {"a", "b"}}).ok());
  EXPECT_TRUE(journal.Record({"run", 2, "m2", {"a", "b"}}).ok());
  EXPECT_TRUE(journal.Record({"other", 1, "", {"a"}}).ok());  // no origin: the round only
  EXPECT_TRUE(journal.Record({"other", 2, "", {"b"}}).ok());
}

// An advert for silos a..d of 3-value updates, with `threshold`.
pb::Request AdvertOfFour(int threshold) {
  pb::Request r;
  pb::AdvertiseRequest* a = r.mutable_advertise();
  a->mutable_params()->set_threshold(threshold);
  a->mutable_params()->set_bits(24);
  a->mutable_params()->set_clip_range(1);
  a->mutable_params()->set_length(3);
  for (const char* n : {"a", "b", "c", "d"}) a->add_participants(n);
  return r;
}

TEST(SecAggAttackTest, AThresholdBelowTheSilosMinSilosIsRefused) {
  SecAggSilo silo("a");
  silo.set_min_silos(4);
  silo.SetInput("run", 1, Update({1, 2}, {3}), 5);
  pb::Request r = AdvertOfFour(3);
  StatusOr<std::string> reply = silo.Handle("run", 1, r.SerializeAsString());
  ASSERT_FALSE(reply.ok());
  EXPECT_THAT(std::string(reply.status().message()),
              HasSubstr("a threshold of 3 would allow a sum over fewer silos than the 4"));
  // At four, the same advert is answered.
  SecAggSilo ok("a");
  ok.set_min_silos(4);
  ok.SetInput("run", 1, Update({1, 2}, {3}), 5);
  EXPECT_TRUE(ok.Handle("run", 1, AdvertOfFour(4).SerializeAsString()).ok());
}

TEST(SecAggAttackTest, AnUnparsableRequestEndsTheSilosRound) {
  SecAggSilo silo("a");
  silo.SetInput("run", 1, Update({1, 2}, {3}), 5);
  EXPECT_FALSE(silo.Handle("run", 1, std::string("\xff\xff\xff", 3)).ok());
  // The round's state is gone: a well-formed advert is refused after it.
  pb::Request r = AdvertOfFour(3);
  StatusOr<std::string> reply = silo.Handle("run", 1, r.SerializeAsString());
  ASSERT_FALSE(reply.ok());
  EXPECT_THAT(std::string(reply.status().message()), HasSubstr("out-of-order"));
}

TEST(SecAggAttackTest, TheOrchestratorDropsASiloWhoseSignatureDoesNotVerify) {
  Federation f(4);
  f.sign = true;
  f.orchestrator_checks = true;
  f.MakeSilos();
  // silo-4 signs with a certificate of another CA: the orchestrator drops it
  // at once, and the others go on without it.
  Identities other("fed");
  f.silos["silo-4"]->SetIdentity(other.For("silo-4", ParticipantKind::kSilo, f.ids.get()));
  StatusOr<SecAggOutcome> out = f.Run();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->contributors, 3);
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_THAT(f.errors[0], HasSubstr("silo-4: the certificate given for 'silo-4'"));
}

}  // namespace
}  // namespace fedsilo::secure
