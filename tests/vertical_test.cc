// Vertical jobs end to end in one process: each party a real
// silo::VerticalPartyAgent reading its own CSV file, the orchestrator's
// VerticalRun between them (orchestrator/vertical_run.h), as `fedsilo run`
// wires them. Hostile parties and a hostile orchestrator are played by
// wrappers around the real parties, or by calling a party directly.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/file_seal.h"
#include "core/job_config.h"
#include "core/model_state_file.h"
#include "core/seeded_shuffle.h"
#include "ml/metrics.h"
#include "ml/sandbox.h"
#include "ml/scripted_module.h"
#include "ml/split_model.h"
#include "orchestrator/vertical_run.h"
#include "secure/audit_log.h"
#include "secure/certificate_authority.h"
#include "secure/psi.h"
#include "secure/secagg.h"
#include "silo/dataset_catalog.h"
#include "silo/privacy_guard.h"
#include "silo/silo_runtime.h"
#include "silo/vertical_party.h"
#include "transport/in_process_transport.h"
#include "transport/vertical_wire.h"

namespace fedsilo {
namespace {

using silo::VerticalPartyAgent;
using ::testing::HasSubstr;
using ::testing::Not;

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// People 0..n-1; the bank holds the label and columns a1, a2, the shop b1,
// b2, the telco c1. Each file holds its own share of the people, in its own
// order. The label depends on every party's columns.
struct People {
  std::string dir;
  std::map<std::string, std::vector<double>> columns;  // id -> a1, a2, b1, b2, c1
  std::map<std::string, int> label;
  std::set<std::string> at_bank, at_shop, at_telco;
};

People MakePeople(const std::string& name, int n, unsigned seed) {
  People p;
  p.dir = ::testing::TempDir() + "/vertical_" + name;
  std::filesystem::remove_all(p.dir);
  std::filesystem::create_directories(p.dir);
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0, 1);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    const std::string id = absl::StrCat("person-", (i * 7919) % 100003);
    ids.push_back(id);
    std::vector<double> v = {g(rng), 10 + 3 * g(rng), g(rng), g(rng), g(rng)};
    p.columns[id] = v;
    p.label[id] = v[0] + (v[1] - 10) / 3 + v[2] - v[3] + v[4] + 0.3 * g(rng) > 0 ? 1 : 0;
    if (u(rng) < 0.85) p.at_bank.insert(id);
    if (u(rng) < 0.8) p.at_shop.insert(id);
    if (u(rng) < 0.9) p.at_telco.insert(id);
  }
  const auto file = [&](const std::string& party, const std::string& header,
                        const std::set<std::string>& holds, auto row) {
    std::vector<std::string> mine(holds.begin(), holds.end());
    std::shuffle(mine.begin(), mine.end(), rng);
    std::string csv = header + "\n";
    for (const std::string& id : mine) csv += id + "," + row(id) + "\n";
    Write(p.dir + "/" + party + ".csv", csv);
  };
  file("bank", "id,a1,a2,label", p.at_bank, [&](const std::string& id) {
    return absl::StrFormat("%.6f,%.6f,%d", p.columns[id][0], p.columns[id][1], p.label[id]);
  });
  file("shop", "id,b1,b2", p.at_shop, [&](const std::string& id) {
    return absl::StrFormat("%.6f,%.6f", p.columns[id][2], p.columns[id][3]);
  });
  file("telco", "id,c1", p.at_telco,
       [&](const std::string& id) { return absl::StrFormat("%.6f", p.columns[id][4]); });
  return p;
}

silo::DatasetEntry Entry(const People& p, const std::string& party) {
  silo::DatasetEntry e;
  e.csv = p.dir + "/" + party + ".csv";
  e.schema.id = "id";
  if (party == "bank") e.schema.label = "label";
  return e;
}

JobConfig Job(const std::vector<std::string>& parties, const std::string& more = "") {
  std::string yaml = absl::StrCat(
      "kind: vertical\nseed: 5\ndata: {dataset: people, test_fraction: 0.25}\n"
      "preprocess: {scale: standard}\nmodel: {name: mlp, hidden: [4]}\n"
      "training: {rounds: 3, batch_size: 16, optimizer: adam, learning_rate: 0.02}\n"
      "federation: {silos: [",
      absl::StrJoin(parties, ", "), "]}\nvertical: {label_owner: bank, cut_width: 3, ",
      "top_hidden: [5]", more, "}\n");
  StatusOr<JobConfig> job = ParseJobConfig(yaml, "job.yaml");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

using Parties = std::vector<std::unique_ptr<VerticalPartyAgent>>;

// The initial weights' seed the tests give party i (its top model: + 1).
uint64_t Seed(size_t i) { return 1000 + 10 * i; }

Parties Make(const People& p, const JobConfig& job) {
  Parties out;
  for (const std::string& name : job.federation.silos) {
    silo::VerticalPartyOptions options;
    options.model_seed = Seed(out.size());
    StatusOr<std::unique_ptr<VerticalPartyAgent>> party =
        VerticalPartyAgent::Create(name, job, Entry(p, name), options);
    EXPECT_TRUE(party.ok()) << party.status();
    out.push_back(*std::move(party));
  }
  return out;
}

std::vector<transport::VerticalParty*> Pointers(const Parties& parties) {
  std::vector<transport::VerticalParty*> out;
  for (const auto& p : parties) out.push_back(p.get());
  return out;
}

orchestrator::VerticalRunOptions Options(tracking::MetricsSink* metrics = nullptr) {
  orchestrator::VerticalRunOptions o;
  o.domain = "fedsilo/vertical/test-run";
  o.metrics = metrics;
  return o;
}

// The documented shared order: the ids every party holds, sorted, then
// shuffled with the job's seed.
std::vector<std::string> SharedOrder(const std::vector<std::set<std::string>>& sets,
                                     uint64_t seed) {
  std::vector<std::string> order;
  for (const std::string& id : sets[0]) {
    if (std::all_of(sets.begin(), sets.end(), [&](const auto& s) { return s.count(id) > 0; })) {
      order.push_back(id);
    }
  }
  std::mt19937_64 rng(seed);
  SeededShuffle(order, rng);
  return order;
}

TEST(VerticalTest, ThePartiesAlignExactlyTheSharedPeopleInOneOrderAndSplitAlike) {
  const People p = MakePeople("align", 400, 1);
  const JobConfig job = Job({"bank", "shop", "telco"});
  Parties parties = Make(p, job);
  orchestrator::VerticalRun run(job, Pointers(parties), Options());
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  ASSERT_TRUE(a.ok()) << a.status();
  const std::vector<std::string> expected = SharedOrder({p.at_bank, p.at_shop, p.at_telco}, 5);
  // Some of everyone's people are not shared: the intersection is smaller
  // than any party's table.
  ASSERT_LT(expected.size(), std::min({p.at_bank.size(), p.at_shop.size(), p.at_telco.size()}));
  EXPECT_EQ(a->intersection, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(a->test, std::llround(expected.size() * 0.25));
  EXPECT_EQ(a->train + a->test, a->intersection);
  for (const auto& party : parties) EXPECT_EQ(party->aligned_ids(), expected) << party->name();
}

// The orchestrator and the parties see points only: no byte of a set it
// relays is an id, its SHA-512, or the group element it hashes to.
class Recording : public transport::VerticalParty {
 public:
  explicit Recording(transport::VerticalParty* inner) : inner_(inner) {}
  std::vector<std::string> relayed;
  const std::string& name() const override { return inner_->name(); }
  StatusOr<transport::BlindedSet> BlindOwnIds(const std::string& domain) override {
    StatusOr<transport::BlindedSet> out = inner_->BlindOwnIds(domain);
    if (out.ok()) relayed.push_back(out->points);
    return out;
  }
  StatusOr<transport::BlindedSet> Reblind(const transport::BlindedSet& set) override {
    relayed.push_back(set.points);
    StatusOr<transport::BlindedSet> out = inner_->Reblind(set);
    if (out.ok()) relayed.push_back(out->points);
    return out;
  }
  StatusOr<transport::AlignedRows> Align(const std::vector<int64_t>& rows,
                                         const transport::BlindedSet& own_final) override {
    return inner_->Align(rows, own_final);
  }
  StatusOr<std::vector<float>> Forward(const transport::RowSelection& rows) override {
    return inner_->Forward(rows);
  }
  Status Backward(const std::vector<float>& gradient) override {
    return inner_->Backward(gradient);
  }
  Status BeginRound(int round) override { return inner_->BeginRound(round); }
  StatusOr<transport::TopStepResult> TopStep(const transport::RowSelection& rows,
                                             const std::vector<std::vector<float>>& cut) override {
    return inner_->TopStep(rows, cut);
  }
  Status TopEvaluate(const transport::RowSelection& rows,
                     const std::vector<std::vector<float>>& cut) override {
    return inner_->TopEvaluate(rows, cut);
  }
  StatusOr<transport::RoundMetrics> EndRound() override { return inner_->EndRound(); }

 protected:
  transport::VerticalParty* inner_;
};

TEST(VerticalTest, NoRelayedByteIsAnIdOrItsHash) {
  const People p = MakePeople("relayed", 120, 2);
  const JobConfig job = Job({"bank", "shop"});
  Parties parties = Make(p, job);
  std::vector<std::unique_ptr<Recording>> recorded;
  std::vector<transport::VerticalParty*> reach;
  for (const auto& party : parties) {
    recorded.push_back(std::make_unique<Recording>(party.get()));
    reach.push_back(recorded.back().get());
  }
  orchestrator::VerticalRun run(job, reach, Options());
  ASSERT_TRUE(run.Align().ok());
  size_t checked = 0;
  for (const auto& r : recorded) {
    ASSERT_FALSE(r->relayed.empty());
    for (const std::string& bytes : r->relayed) {
      for (const auto& [id, unused] : p.columns) {
        unsigned char sha[SHA512_DIGEST_LENGTH];
        SHA512(reinterpret_cast<const unsigned char*>(id.data()), id.size(), sha);
        const std::string point = secure::PsiHashToGroup("fedsilo/vertical/test-run", id);
        ASSERT_EQ(point.size(), secure::kPsiPointBytes);
        EXPECT_EQ(bytes.find(id), std::string::npos);
        EXPECT_EQ(bytes.find(std::string(reinterpret_cast<char*>(sha), 16)), std::string::npos);
        EXPECT_EQ(bytes.find(point), std::string::npos) << id;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0u);
}

// Each party's columns in People::columns, by name.
std::vector<size_t> ColumnsOf(const std::string& party) {
  if (party == "bank") return {0, 1};
  if (party == "shop") return {2, 3};
  return {4};
}

// Trains the job's concatenated model centrally on the joined table: the
// people all `parties` hold, in the documented order, scaled with the
// training rows' statistics, the documented batches, the parties' initial
// weights (Seed). Returns each party's bottom model and the top model.
std::vector<std::unique_ptr<ml::LayerStack>> TrainCentrally(
    const People& p, const JobConfig& job, const std::vector<std::set<std::string>>& sets,
    int64_t train_rows) {
  const std::vector<std::string>& parties = job.federation.silos;
  const std::vector<std::string> order = SharedOrder(sets, job.seed);
  const size_t train = static_cast<size_t>(train_rows);
  std::vector<std::vector<double>> x(order.size(), std::vector<double>(5));
  for (size_t r = 0; r < order.size(); ++r) x[r] = p.columns.at(order[r]);
  for (size_t j = 0; j < 5; ++j) {  // standard scaling with the training rows'
    double sum = 0, squares = 0;
    for (size_t r = 0; r < train; ++r) {
      sum += x[r][j];
      squares += x[r][j] * x[r][j];
    }
    const double mean = sum / train, sd = std::sqrt(squares / train - mean * mean);
    for (auto& row : x) row[j] = (row[j] - mean) / sd;
  }
  const int64_t cut = job.vertical.cut_width;
  std::vector<std::unique_ptr<ml::LayerStack>> parts;
  size_t owner = 0;
  for (size_t i = 0; i < parties.size(); ++i) {
    const int64_t columns = static_cast<int64_t>(ColumnsOf(parties[i]).size());
    parts.push_back(
        ml::LayerStack::Create({columns, job.model.hidden, cut, true, false}, job.training, Seed(i))
            .value());
    privacy::SecureRandom random = silo::TestWeightsRandom(Seed(i));
    EXPECT_TRUE(ml::DrawInitialWeights(*parts.back(), random).ok());
    if (parties[i] == job.vertical.label_owner) owner = i;
  }
  parts.push_back(ml::LayerStack::Create({cut * static_cast<int64_t>(parties.size()),
                                          job.vertical.top_hidden, 2, false, true},
                                         job.training, Seed(owner) + 1)
                      .value());
  privacy::SecureRandom top_random = silo::TestWeightsRandom(Seed(owner) + 1);
  EXPECT_TRUE(ml::DrawInitialWeights(*parts.back(), top_random).ok());
  ml::LayerStack& top = *parts.back();
  for (int round = 1; round <= job.training.rounds; ++round) {
    for (const std::vector<int64_t>& batch : VerticalBatches(job, round, train_rows)) {
      const int64_t n = static_cast<int64_t>(batch.size());
      std::vector<std::vector<float>> outputs;
      for (size_t i = 0; i < parties.size(); ++i) {
        std::vector<float> xi;
        for (int64_t pos : batch) {
          for (size_t c : ColumnsOf(parties[i])) {
            xi.push_back(static_cast<float>(x[static_cast<size_t>(pos)][c]));
          }
        }
        outputs.push_back(parts[i]->Forward(xi, n, true).value());
      }
      std::vector<float> joined;
      std::vector<int64_t> y;
      for (int64_t r = 0; r < n; ++r) {
        for (const auto& out : outputs) {
          joined.insert(joined.end(), out.begin() + r * cut, out.begin() + (r + 1) * cut);
        }
        y.push_back(p.label.at(order[static_cast<size_t>(batch[static_cast<size_t>(r)])]));
      }
      std::vector<float> logits = top.Forward(joined, n, true).value();
      ml::CrossEntropy ce = ml::CrossEntropyOf(logits, n, 2, y).value();
      std::vector<float> d = top.Backward(ce.gradient).value();
      const size_t width = static_cast<size_t>(cut) * parties.size();
      for (size_t i = 0; i < parties.size(); ++i) {
        std::vector<float> di;
        for (int64_t r = 0; r < n; ++r) {
          const auto from = d.begin() + static_cast<int64_t>(r * width + i * cut);
          di.insert(di.end(), from, from + cut);
        }
        EXPECT_TRUE(parts[i]->Backward(di).ok());
      }
    }
  }
  return parts;
}

double MaxDifference(const ModelState& s, const ModelState& t) {
  EXPECT_TRUE(s.CheckSameLayout(t).ok());
  double most = 0;
  for (size_t i = 0; i < s.size() && i < t.size(); ++i) {
    for (size_t k = 0; k < s.tensors()[i].floats().size(); ++k) {
      most =
          std::max<double>(most, std::abs(s.tensors()[i].floats()[k] - t.tensors()[i].floats()[k]));
    }
  }
  return most;
}

// The split model trained across the parties ends with the weights of the
// same model trained centrally on the joined table: the same rows (joined
// by id here, in the documented order), scaled with the training rows'
// statistics, the same batches, the same initial weights. With two parties,
// and with three where the label owner is in the middle (every gradient
// must reach its own party).
TEST(VerticalTest, SplitLearningEqualsCentralTrainingOnTheJoinedTable) {
  const People p = MakePeople("equal", 300, 3);
  for (const std::vector<std::string>& names :
       {std::vector<std::string>{"bank", "shop"},
        std::vector<std::string>{"shop", "bank", "telco"}}) {
    JobConfig job = Job(names);
    job.training.rounds = 6;
    Parties parties = Make(p, job);
    orchestrator::VerticalRun run(job, Pointers(parties), Options());
    StatusOr<orchestrator::VerticalAlignment> a = run.Align();
    ASSERT_TRUE(a.ok()) << a.status();
    StatusOr<orchestrator::VerticalResult> trained = run.Train(*a);
    ASSERT_TRUE(trained.ok()) << trained.status();
    EXPECT_EQ(trained->rounds_completed, 6);
    std::printf("%zu parties: test AUC %.4f\n", names.size(), trained->final_metrics.at("auc"));
    std::vector<std::set<std::string>> sets;
    for (const std::string& name : names) {
      sets.push_back(name == "bank" ? p.at_bank : name == "shop" ? p.at_shop : p.at_telco);
    }
    const auto central = TrainCentrally(p, job, sets, a->train);
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_LT(MaxDifference(parties[i]->BottomState().value(), central[i]->GetState()), 1e-4)
          << names[i];
      if (names[i] == "bank") {
        EXPECT_LT(MaxDifference(parties[i]->TopState(), central.back()->GetState()), 1e-4);
      } else {
        EXPECT_TRUE(parties[i]->TopState().empty()) << names[i];  // no top model
      }
    }
    // It learned: the label depends on every party's columns.
    EXPECT_GT(trained->final_metrics.at("auc"), 0.8);
  }
}

// Without a seed given, each party draws its model's initial weights
// itself: two parties made from the same job start from different weights,
// which no one else can compute from the job.
TEST(VerticalTest, EachPartyDrawsItsInitialWeightsItself) {
  const People p = MakePeople("secret_init", 80, 10);
  const JobConfig job = Job({"bank", "shop"});
  std::vector<ModelState> bottoms;
  for (int i = 0; i < 2; ++i) {
    Parties parties;
    for (const std::string& name : job.federation.silos) {
      parties.push_back(VerticalPartyAgent::Create(name, job, Entry(p, name)).value());
    }
    orchestrator::VerticalRun run(job, Pointers(parties), Options());
    ASSERT_TRUE(run.Align().ok());
    bottoms.push_back(parties[1]->BottomState().value());
  }
  EXPECT_GT(MaxDifference(bottoms[0], bottoms[1]), 1e-3);
}

// A hostile orchestrator that asks a party to blind a set twice (to test
// guessed ids against its own), or for itself or a stranger, is refused.
TEST(VerticalTest, APartyBlindsEachOtherPartysSetOnceAndForPartiesOfTheJobOnly) {
  const People p = MakePeople("blind_once", 60, 4);
  const JobConfig job = Job({"bank", "shop"});
  Parties parties = Make(p, job);
  VerticalPartyAgent& bank = *parties[0];
  EXPECT_EQ(bank.Reblind({"shop", 1, std::string(32, 'x'), "", ""}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // before its own
  StatusOr<transport::BlindedSet> shop_set = parties[1]->BlindOwnIds("fedsilo/vertical/x");
  ASSERT_TRUE(shop_set.ok());
  EXPECT_EQ(shop_set->origin, "shop");
  EXPECT_EQ(shop_set->hops, 1);
  StatusOr<transport::BlindedSet> bank_set = bank.BlindOwnIds("fedsilo/vertical/x");
  ASSERT_TRUE(bank_set.ok());
  EXPECT_EQ(bank.BlindOwnIds("fedsilo/vertical/x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(bank.Align({0}, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(bank.Reblind(*bank_set).status().code(), absl::StatusCode::kPermissionDenied);
  transport::BlindedSet stranger = *shop_set;
  stranger.origin = "mallory";
  EXPECT_EQ(bank.Reblind(stranger).status().code(), absl::StatusCode::kPermissionDenied);
  // Out of turn: a set already blinded by both parties.
  transport::BlindedSet twice = *shop_set;
  twice.hops = 2;
  EXPECT_EQ(bank.Reblind(twice).status().code(), absl::StatusCode::kPermissionDenied);
  StatusOr<transport::BlindedSet> reblinded = bank.Reblind(*shop_set);
  ASSERT_TRUE(reblinded.ok());
  EXPECT_EQ(reblinded->origin, "shop");
  EXPECT_EQ(reblinded->hops, 2);
  StatusOr<transport::BlindedSet> again = bank.Reblind(*shop_set);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("a second time"));
  // Rows that are not distinct rows of its table are refused too.
  StatusOr<transport::BlindedSet> bank_final = parties[1]->Reblind(*bank_set);
  ASSERT_TRUE(bank_final.ok()) << bank_final.status();
  EXPECT_EQ(bank.Align({0}, *shop_set).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bank.Align({0, 0}, *bank_final).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(bank.Align({static_cast<int64_t>(bank.rows())}, *bank_final).ok());
  EXPECT_TRUE(bank.Align({0, 1}, *bank_final).ok());
}

// A party that sends cut-layer outputs of the wrong size, or not finite, is
// named; a gradient that is not finite is refused by the party.
class Hostile : public Recording {
 public:
  enum Kind { kShortOutputs, kNanOutputs, kMiscountedRows, kOtherOrder };
  Hostile(transport::VerticalParty* inner, Kind kind) : Recording(inner), kind_(kind) {}
  StatusOr<std::vector<float>> Forward(const transport::RowSelection& rows) override {
    StatusOr<std::vector<float>> out = inner_->Forward(rows);
    if (out.ok() && kind_ == kShortOutputs) out->pop_back();
    if (out.ok() && kind_ == kNanOutputs) (*out)[0] = std::nanf("");
    return out;
  }
  StatusOr<transport::AlignedRows> Align(const std::vector<int64_t>& rows,
                                         const transport::BlindedSet& own_final) override {
    StatusOr<transport::AlignedRows> a = inner_->Align(rows, own_final);
    if (a.ok() && kind_ == kMiscountedRows) a->train += 1;
    if (a.ok() && kind_ == kOtherOrder) a->order_digest[0] ^= 1;
    return a;
  }

 private:
  Kind kind_;
};

TEST(VerticalTest, AHostilePartysCutLayerOrRowCountIsRefusedNamingIt) {
  const People p = MakePeople("hostile", 150, 5);
  for (Hostile::Kind kind : {Hostile::kShortOutputs, Hostile::kNanOutputs, Hostile::kMiscountedRows,
                             Hostile::kOtherOrder}) {
    const JobConfig job = Job({"bank", "shop"});
    Parties parties = Make(p, job);
    Hostile shop(parties[1].get(), kind);
    orchestrator::VerticalRun run(job, {parties[0].get(), &shop}, Options());
    StatusOr<orchestrator::VerticalAlignment> a = run.Align();
    if (kind == Hostile::kMiscountedRows || kind == Hostile::kOtherOrder) {
      ASSERT_FALSE(a.ok());
      EXPECT_THAT(std::string(a.status().message()),
                  HasSubstr(kind == Hostile::kOtherOrder
                                ? "party 'shop' holds other people, or in another order"
                                : "party 'shop' aligned"));
      continue;
    }
    ASSERT_TRUE(a.ok());
    StatusOr<orchestrator::VerticalResult> r = run.Train(*a);
    ASSERT_FALSE(r.ok()) << kind;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("party 'shop'")) << kind;
  }
  const JobConfig job = Job({"bank", "shop"});
  Parties parties = Make(p, job);
  orchestrator::VerticalRun run(job, Pointers(parties), Options());
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  ASSERT_TRUE(a.ok());
  const std::vector<std::vector<int64_t>> batches = VerticalBatches(job, 1, a->train);
  const size_t n0 = batches[0].size(), n1 = batches[1].size();
  ASSERT_TRUE(parties[1]->BeginRound(1).ok());
  ASSERT_TRUE(parties[1]->Forward({false, batches[0]}).ok());
  std::vector<float> poisoned(n0 * 3, 0.1f);
  poisoned[2] = INFINITY;
  EXPECT_THAT(std::string(parties[1]->Backward(poisoned).message()), HasSubstr("not finite"));
  // The label owner checks what it is handed too: the orchestrator may be
  // the one that lies.
  std::vector<float> nan_cut(n0 * 3, 0.2f);
  nan_cut[4] = std::nanf("");
  ASSERT_TRUE(parties[0]->BeginRound(1).ok());
  StatusOr<transport::TopStepResult> top = parties[0]->TopStep({false, batches[0]}, {nan_cut});
  EXPECT_EQ(top.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(top.status().message()),
              HasSubstr("party 'shop' sent cut-layer outputs that are not finite"));
  top = parties[0]->TopStep({false, batches[1]}, {std::vector<float>(n1 * 3 - 1, 0.2f)});
  EXPECT_THAT(std::string(top.status().message()),
              HasSubstr("party 'shop' sent cut-layer outputs of the wrong size"));
  EXPECT_EQ(parties[1]->TopStep({false, batches[1]}, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // the shop has no labels
  EXPECT_FALSE(parties[1]->Forward({true, {1000000}}).ok());
}

// A hostile orchestrator cannot query a party's model, or the label
// owner's, on rows of its choosing: a round asks for its batches in order,
// then for every test row once, in order; the label owner's metrics come
// once a round, after all of them.
TEST(VerticalTest, APartyAnswersOnlyTheRowsTheRoundMayAskFor) {
  const People p = MakePeople("out_of_turn", 200, 11);
  const JobConfig job = Job({"bank", "shop"});
  Parties parties = Make(p, job);
  orchestrator::VerticalRun run(job, Pointers(parties), Options());
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  ASSERT_TRUE(a.ok());
  VerticalPartyAgent& bank = *parties[0];
  VerticalPartyAgent& shop = *parties[1];
  const std::vector<std::vector<int64_t>> batches = VerticalBatches(job, 1, a->train);
  EXPECT_EQ(shop.Forward({false, batches[0]}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // before the first round
  EXPECT_EQ(shop.BeginRound(2).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(shop.BeginRound(1).ok());
  ASSERT_TRUE(bank.BeginRound(1).ok());
  const auto denied = [](const Status& s) {
    return s.code() == absl::StatusCode::kPermissionDenied;
  };
  EXPECT_TRUE(denied(shop.Forward({false, {0}}).status()));         // a row of its choice
  EXPECT_TRUE(denied(shop.Forward({false, batches[1]}).status()));  // out of order
  EXPECT_TRUE(denied(shop.Forward({true, {0}}).status()));          // test before training
  EXPECT_TRUE(denied(bank.TopEvaluate({true, {0}}, {std::vector<float>(3)})));
  EXPECT_EQ(bank.EndRound().status().code(), absl::StatusCode::kFailedPrecondition);
  // The round as the orchestrator runs it...
  for (const std::vector<int64_t>& batch : batches) {
    std::vector<float> cut = shop.Forward({false, batch}).value();
    StatusOr<transport::TopStepResult> step = bank.TopStep({false, batch}, {cut});
    ASSERT_TRUE(step.ok()) << step.status();
    ASSERT_TRUE(shop.Backward(step->gradients[0]).ok());
  }
  std::vector<int64_t> all_test(static_cast<size_t>(a->test));
  std::iota(all_test.begin(), all_test.end(), 0);
  EXPECT_TRUE(denied(shop.Forward({true, {1, 2}}).status()));  // not from the first
  std::vector<float> cut = shop.Forward({true, all_test}).value();
  ASSERT_TRUE(bank.TopEvaluate({true, all_test}, {cut}).ok());
  StatusOr<transport::RoundMetrics> metrics = bank.EndRound();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_GT(metrics->train_loss, 0);
  EXPECT_EQ(metrics->test.count("auc"), 1u);
  // ... and no second look at its rows.
  EXPECT_TRUE(denied(shop.Forward({true, {0}}).status()));
  EXPECT_TRUE(denied(bank.TopEvaluate({true, {0}}, {std::vector<float>(3)})));
  EXPECT_EQ(bank.EndRound().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(shop.BeginRound(2).ok());
}

TEST(VerticalTest, BadTablesAreRefusedNamingTheParty) {
  const People p = MakePeople("bad", 50, 6);
  const JobConfig job = Job({"bank", "shop"});
  silo::DatasetEntry no_id = Entry(p, "shop");
  no_id.schema.id.clear();
  StatusOr<std::unique_ptr<VerticalPartyAgent>> made =
      VerticalPartyAgent::Create("shop", job, no_id);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("party 'shop': dataset 'people' has no id column"));

  silo::DatasetEntry wrong_id = Entry(p, "shop");
  wrong_id.schema.id = "customer";
  made = VerticalPartyAgent::Create("shop", job, wrong_id);
  EXPECT_THAT(std::string(made.status().message()), HasSubstr("party 'shop'"));
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("id column 'customer' is not in the file's header"));

  silo::DatasetEntry unlabelled = Entry(p, "bank");
  unlabelled.schema.label.clear();
  made = VerticalPartyAgent::Create("bank", job, unlabelled);
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("party 'bank': is the label owner, but its catalog names no label"));

  Write(p.dir + "/twice.csv", "id,b1,b2\nx,1,2\ny,3,4\nx,5,6\n");
  silo::DatasetEntry twice = Entry(p, "shop");
  twice.csv = p.dir + "/twice.csv";
  made = VerticalPartyAgent::Create("shop", job, twice);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("party 'shop': 1 rows repeat an id held by an earlier row"));
  EXPECT_THAT(std::string(made.status().message()), Not(HasSubstr("x,")));

  Write(p.dir + "/no_id_value.csv", "id,b1,b2\nx,1,2\n,3,4\n");
  twice.csv = p.dir + "/no_id_value.csv";
  made = VerticalPartyAgent::Create("shop", job, twice);
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("row 2, column 'id': the row has no id"));
}

TEST(VerticalTest, PartiesThatShareNobodyAreToldSo) {
  const People p = MakePeople("nobody", 50, 7);
  Write(p.dir + "/strangers.csv", "id,b1,b2\nstranger-1,1,2\nstranger-2,3,4\n");
  const JobConfig job = Job({"bank", "shop"});
  silo::DatasetEntry strangers = Entry(p, "shop");
  strangers.csv = p.dir + "/strangers.csv";
  Parties parties;
  parties.push_back(VerticalPartyAgent::Create("bank", job, Entry(p, "bank")).value());
  parties.push_back(VerticalPartyAgent::Create("shop", job, strangers).value());
  orchestrator::VerticalRun run(job, Pointers(parties), Options());
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("the parties share no ids (bank, shop): check that every party's "
                        "catalog names the same id column"));
  EXPECT_THAT(std::string(a.status().message()), Not(HasSubstr("rows")));
}

// vertical.gradient_noise: the label owner's gradients to the other parties
// carry noise (the same step without it gives other gradients), and the
// model still learns.
TEST(VerticalTest, GradientNoiseChangesWhatTheLabelOwnerSendsAndTrainingGoesOn) {
  const People p = MakePeople("noise", 300, 8);
  std::vector<std::vector<float>> sent;
  for (const char* noise : {"", ", gradient_noise: 1"}) {
    const JobConfig job = Job({"bank", "shop"}, noise);
    {
      // One step by hand: the same batch, the same weights, with or without.
      Parties parties = Make(p, job);
      orchestrator::VerticalRun run(job, Pointers(parties), Options());
      StatusOr<orchestrator::VerticalAlignment> a = run.Align();
      ASSERT_TRUE(a.ok());
      ASSERT_TRUE(parties[0]->BeginRound(1).ok());
      ASSERT_TRUE(parties[1]->BeginRound(1).ok());
      const transport::RowSelection rows{false, VerticalBatches(job, 1, a->train)[0]};
      std::vector<float> cut = parties[1]->Forward(rows).value();
      StatusOr<transport::TopStepResult> step = parties[0]->TopStep(rows, {cut});
      ASSERT_TRUE(step.ok()) << step.status();
      ASSERT_EQ(step->gradients.size(), 1u);
      sent.push_back(step->gradients[0]);
    }
    Parties parties = Make(p, job);
    orchestrator::VerticalRun run(job, Pointers(parties), Options());
    StatusOr<orchestrator::VerticalAlignment> a = run.Align();
    ASSERT_TRUE(a.ok());
    StatusOr<orchestrator::VerticalResult> r = run.Train(*a);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_GT(r->final_metrics.at("auc"), 0.7) << noise;
  }
  double moved = 0;
  for (size_t i = 0; i < sent[0].size(); ++i) moved += std::abs(sent[0][i] - sent[1][i]);
  EXPECT_GT(moved, 1e-4);
}

// The passive party as an attacker: it keeps the gradient the label owner
// sends for each of its training rows in round 1.
class GradientSpy : public Recording {
 public:
  using Recording::Recording;
  std::vector<std::vector<int64_t>> batches;  // positions of each batch
  std::vector<std::vector<float>> gradients;  // and the gradient sent for it
  StatusOr<std::vector<float>> Forward(const transport::RowSelection& rows) override {
    if (!rows.test) batches.push_back(rows.positions);
    return inner_->Forward(rows);
  }
  Status Backward(const std::vector<float>& gradient) override {
    gradients.push_back(gradient);
    return inner_->Backward(gradient);
  }
};

// How well the spy reads the labels from the gradients (ROC AUC; 0.5 is a
// guess): per batch, each row's gradient projected on the batch's main
// direction (positives and negatives push the cut layer opposite ways; the
// direction's sign is fixed by the first batch).
double LabelLeakage(const GradientSpy& spy, const std::vector<int>& labels, int width) {
  std::vector<float> scores;
  std::vector<int64_t> truth;
  std::vector<double> first;
  for (size_t b = 0; b < spy.batches.size() && b < spy.gradients.size(); ++b) {
    const std::vector<float>& g = spy.gradients[b];
    const size_t rows = spy.batches[b].size();
    std::vector<double> u(static_cast<size_t>(width), 1.0);
    for (int it = 0; it < 100; ++it) {  // power iteration on sum g g^T
      std::vector<double> next(u.size(), 0.0);
      for (size_t r = 0; r < rows; ++r) {
        double dot = 0;
        for (int k = 0; k < width; ++k) dot += g[r * width + k] * u[k];
        for (int k = 0; k < width; ++k) next[k] += dot * g[r * width + k];
      }
      double norm = 0;
      for (double v : next) norm += v * v;
      norm = std::sqrt(norm);
      if (norm == 0) break;
      for (size_t k = 0; k < u.size(); ++k) u[k] = next[k] / norm;
    }
    if (first.empty()) first = u;
    double align = 0;
    for (size_t k = 0; k < u.size(); ++k) align += u[k] * first[k];
    for (size_t r = 0; r < rows; ++r) {
      double score = 0;
      for (int k = 0; k < width; ++k) score += g[r * width + k] * u[k];
      scores.push_back(static_cast<float>(align < 0 ? -score : score));
      truth.push_back(labels[static_cast<size_t>(spy.batches[b][r])]);
    }
  }
  const double auc = ml::RocAuc(scores, truth);
  return std::max(auc, 1 - auc);
}

// Label leakage through the gradients, played by the passive party: without
// noise it reads most labels of its rows from the gradients of one round;
// vertical.gradient_noise blurs them, and the model still learns.
TEST(VerticalTest, APassivePartyReadsLabelsFromGradientsAndNoiseBlursThem) {
  const People p = MakePeople("leakage", 600, 9);
  std::map<std::string, double> leaked, learned;
  for (const char* noise : {"0", "1", "4"}) {
    JobConfig job = Job({"bank", "shop"}, absl::StrCat(", gradient_noise: ", noise));
    job.training.rounds = 1;
    Parties parties = Make(p, job);
    GradientSpy spy(parties[1].get());
    orchestrator::VerticalRun run(job, {parties[0].get(), &spy}, Options());
    StatusOr<orchestrator::VerticalAlignment> a = run.Align();
    ASSERT_TRUE(a.ok()) << a.status();
    StatusOr<orchestrator::VerticalResult> r = run.Train(*a);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<int> labels;  // of the shop's training rows, by position
    for (int64_t i = 0; i < a->train; ++i) {
      labels.push_back(p.label.at(parties[1]->aligned_ids()[static_cast<size_t>(i)]));
    }
    leaked[noise] = LabelLeakage(spy, labels, job.vertical.cut_width);
    learned[noise] = r->final_metrics.at("auc");
    std::printf(
        "gradient_noise %s: the shop reads labels with AUC %.3f; the model's test AUC %.3f\n",
        noise, leaked[noise], learned[noise]);
  }
  EXPECT_GT(leaked["0"], 0.9);
  EXPECT_LT(leaked["4"], leaked["0"] - 0.15);
  EXPECT_LT(leaked["1"], leaked["0"]);
}

// Identities a federation CA issues (or another federation's, for attacks).
struct Identities {
  std::unique_ptr<secure::CertificateAuthority> ca;
  explicit Identities(const std::string& federation = "fed") {
    ca = secure::CertificateAuthority::Create(federation, 30, std::chrono::system_clock::now())
             .value();
  }
  std::shared_ptr<const secure::SecAggIdentity> For(const std::string& name) const {
    secure::CertificateRequest request;
    request.name = name;
    request.kind = secure::ParticipantKind::kSilo;
    secure::IssuedCertificate issued = ca->Issue(request, std::chrono::system_clock::now()).value();
    return secure::SecAggIdentity::Create(issued.certificate_pem, issued.private_key_pem,
                                          ca->certificate_pem())
        .value();
  }
};

Parties MakeSigned(const People& p, const JobConfig& job, const Identities& ids,
                   int64_t max_peer_ids = 0) {
  Parties out;
  for (const std::string& name : job.federation.silos) {
    silo::VerticalPartyOptions options;
    options.model_seed = Seed(out.size());
    options.identity = ids.For(name);
    options.max_peer_ids = max_peer_ids;
    out.push_back(VerticalPartyAgent::Create(name, job, Entry(p, name), options).value());
  }
  return out;
}

// In a federation every set a party blinds is signed, and a party blinds
// only a set signed by the party before it in the job's rotation: a hostile
// orchestrator cannot pass off points of its making (hashed guesses) as a
// party's set to test them against another party's ids.
TEST(VerticalTest, InAFederationAPartyBlindsOnlySetsSignedByThePartyBeforeIt) {
  const People p = MakePeople("signed", 120, 11);
  const JobConfig job = Job({"bank", "shop", "telco"});
  const Identities ids;
  {
    Parties parties = MakeSigned(p, job, ids);
    orchestrator::VerticalRun run(job, Pointers(parties), Options());
    StatusOr<orchestrator::VerticalAlignment> a = run.Align();
    ASSERT_TRUE(a.ok()) << a.status();  // the honest run is unaffected
    EXPECT_EQ(a->intersection,
              static_cast<int64_t>(SharedOrder({p.at_bank, p.at_shop, p.at_telco}, 5).size()));
  }
  Parties parties = MakeSigned(p, job, ids);
  const std::string domain = "fedsilo/vertical/test-run";
  StatusOr<transport::BlindedSet> bank = parties[0]->BlindOwnIds(domain);
  StatusOr<transport::BlindedSet> shop = parties[1]->BlindOwnIds(domain);
  ASSERT_TRUE(bank.ok() && shop.ok());
  EXPECT_FALSE(shop->signature.empty());
  VerticalPartyAgent& telco = *parties[2];
  ASSERT_TRUE(telco.BlindOwnIds(domain).ok());
  const auto refused = [&](const transport::BlindedSet& set, const std::string& why) {
    StatusOr<transport::BlindedSet> out = telco.Reblind(set);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kPermissionDenied) << why;
    return std::string(out.status().message());
  };
  // The orchestrator's own points: hashed guesses, unsigned or signed by
  // nobody the telco trusts.
  secure::PsiParty mallory = secure::PsiParty::Create(domain).value();
  transport::BlindedSet guesses{"shop", 1, mallory.Blind({"person-7", "person-14"}).value(), "",
                                ""};
  EXPECT_THAT(refused(guesses, "unsigned"), HasSubstr("did not sign"));
  const Identities other("another-federation");
  const auto impostor = other.For("shop");
  guesses.certificate = impostor->certificate_pem();
  guesses.signature = impostor->signer().Sign(transport::SetMessage(domain, guesses)).value();
  EXPECT_THAT(refused(guesses, "another CA's shop"), HasSubstr("is not party 'shop''s"));
  // The shop's real signature over other points.
  transport::BlindedSet swapped = *shop;
  swapped.points = guesses.points;
  EXPECT_THAT(refused(swapped, "points swapped"), HasSubstr("is not party 'shop''s"));
  // The bank's genuine set, relabelled as the shop's.
  transport::BlindedSet relabelled = *bank;
  relabelled.origin = "shop";
  refused(relabelled, "the bank's set as the shop's");
  // Signed for another run (domain).
  Parties elsewhere = MakeSigned(p, job, ids);
  StatusOr<transport::BlindedSet> other_run = elsewhere[1]->BlindOwnIds("fedsilo/vertical/other");
  ASSERT_TRUE(other_run.ok());
  refused(*other_run, "another run's set");
  // The bank's set comes to the telco second in the rotation (bank, shop,
  // telco): only after the shop blinded it, signed by the shop.
  refused(*bank, "the bank's set, out of turn");
  StatusOr<transport::BlindedSet> bank_at_shop = parties[1]->Reblind(*bank);
  ASSERT_TRUE(bank_at_shop.ok()) << bank_at_shop.status();
  EXPECT_TRUE(telco.Reblind(*shop).ok());
  EXPECT_TRUE(telco.Reblind(*bank_at_shop).ok());
}

// A party's policy caps the sets it blinds (vertical.max_peer_ids): a party
// that sends more ids than it could hold is testing guesses.
TEST(VerticalTest, APartyBlindsNoSetLargerThanItsPolicyAllows) {
  const People p = MakePeople("cap", 100, 12);
  const JobConfig job = Job({"bank", "shop"});
  const Identities ids;
  Parties parties = MakeSigned(p, job, ids, /*max_peer_ids=*/50);
  orchestrator::VerticalRun run(job, Pointers(parties), Options());
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("vertical.max_peer_ids"));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("at most 50"));
}

// A silo runtime with the People's tables in its catalog as dataset
// "people", and its policy (policy.yaml text; "" for none).
struct SiloSide {
  std::unique_ptr<silo::PrivacyGuard> guard;
  std::unique_ptr<silo::SiloRuntime> runtime;
  std::unique_ptr<transport::InProcessConnection> connection;
};

SiloSide MakeSilo(const People& p, const std::string& name, const std::string& policy,
                  const std::shared_ptr<const secure::SecAggIdentity>& identity,
                  const std::string& state_dir = "") {
  SiloSide side;
  std::string policy_path;
  if (!policy.empty()) {
    policy_path = absl::StrCat(p.dir, "/", name, "-policy.yaml");
    Write(policy_path, policy);
  }
  side.guard = silo::PrivacyGuard::Open(policy_path, "").value();
  silo::DatasetCatalog catalog{{"people", Entry(p, name)}};
  side.runtime =
      std::make_unique<silo::SiloRuntime>(name, std::move(catalog), p.dir, side.guard.get());
  side.runtime->SetSecAggIdentity(identity);
  side.runtime->SetStateDir(state_dir.empty() ? absl::StrCat(p.dir, "/state-", name) : state_dir);
  side.connection = std::make_unique<transport::InProcessConnection>(name, side.runtime.get());
  return side;
}

constexpr char kAllowVertical[] =
    "datasets:\n  people:\n    vertical: {allow: true, min_intersection: 10}\n";

// The whole job in the wire's form: each step a vertical.proto request to a
// silo's runtime, which checks its policy and signs its sets.
TEST(VerticalTest, AJobRunsThroughTheSilosRuntimesInTheWiresForm) {
  const People p = MakePeople("wire", 400, 13);
  // Wider than the other tests' job: each party draws its initial weights,
  // and the narrowest cut layers sometimes start dead.
  JobConfig job = Job({"bank", "shop", "telco"});
  job.model.hidden = {8};
  job.vertical.cut_width = 6;
  job.vertical.top_hidden = {12};
  const Identities ids;
  std::vector<SiloSide> silos;
  std::vector<std::unique_ptr<transport::RemoteVerticalParty>> remote;
  for (const std::string& name : job.federation.silos) {
    silos.push_back(MakeSilo(p, name, kAllowVertical, ids.For(name)));
    remote.push_back(std::make_unique<transport::RemoteVerticalParty>(silos.back().connection.get(),
                                                                      job, "run-1"));
    ASSERT_TRUE(remote.back()->Open().ok());
  }
  std::vector<transport::VerticalParty*> pointers;
  for (const auto& r : remote) pointers.push_back(r.get());
  orchestrator::VerticalRunOptions options = Options();
  options.domain = "fedsilo/vertical/run-1";
  orchestrator::VerticalRun run(job, pointers, options);
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->intersection,
            static_cast<int64_t>(SharedOrder({p.at_bank, p.at_shop, p.at_telco}, 5).size()));
  StatusOr<orchestrator::VerticalResult> result = run.Train(*a);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rounds_completed, 3);
  // It learned (each party draws its own initial weights, so the value
  // varies from run to run: 0.87-0.995 over 150 runs).
  std::printf("test AUC after 3 rounds: %.4f\n", result->final_metrics.at("auc"));
  EXPECT_GT(result->final_metrics.at("auc"), 0.75);
  // Each party kept its models once the last round's test rows were scored.
  for (const std::string& name : job.federation.silos) {
    const std::string dir = absl::StrCat(p.dir, "/state-", name, "/vertical/run-1/");
    EXPECT_TRUE(std::filesystem::exists(dir + "bottom.fsm")) << name;
    EXPECT_EQ(std::filesystem::exists(dir + "top.fsm"), name == "bank") << name;
  }
  // A step of a run that is not open there, and bytes that are no step.
  transport::RemoteVerticalParty stranger(silos[1].connection.get(), job, "run-2");
  EXPECT_EQ(stranger.BeginRound(1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(silos[1].runtime->VerticalStep({"run-1", nullptr, "\xff\xff", 100}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A run is opened once: opening it again would draw new scalars and reset
  // what the party allows a run.
  Status again = remote[1]->Open();
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.message()), HasSubstr("a vertical job is opened once"));
  // A run's points are bound to it: a party blinds for no other domain.
  transport::RemoteVerticalParty other(silos[1].connection.get(), job, "run-3");
  ASSERT_TRUE(other.Open().ok());
  EXPECT_EQ(other.BlindOwnIds("fedsilo/vertical/run-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  // A job id names a folder at the silo: one that is not an id is refused.
  transport::RemoteVerticalParty climber(silos[1].connection.get(), job, "../../etc");
  EXPECT_EQ(climber.Open().code(), absl::StatusCode::kInvalidArgument);
  // An unopened run's step is refused before it is even read.
  EXPECT_EQ(silos[1]
                .runtime->VerticalStep({"run-9", nullptr, std::string(1 << 20, 'x'), 100})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

// The silo's policy decides whether it takes part (default: no), and which
// of its columns its bottom model reads.
TEST(VerticalTest, ASilosPolicyDecidesWhetherAndWithWhichColumnsItTakesPart) {
  const People p = MakePeople("policy", 100, 14);
  const JobConfig job = Job({"bank", "shop"});
  const Identities ids;
  for (const std::string& policy : {std::string(), std::string("datasets: {people: {}}\n"),
                                    std::string("defaults: {vertical: {allow: false}}\n")}) {
    SiloSide shop = MakeSilo(p, "shop", policy, ids.For("shop"));
    Status opened = transport::RemoteVerticalParty(shop.connection.get(), job, "r").Open();
    EXPECT_EQ(opened.code(), absl::StatusCode::kFailedPrecondition) << policy;
    EXPECT_THAT(std::string(opened.message()), HasSubstr("datasets.people.vertical.allow"));
  }
  // Only b2 exposed: the bottom model's first layer reads one column.
  SiloSide shop = MakeSilo(
      p, "shop",
      "datasets:\n  people:\n    vertical: {allow: true, columns: [b2], min_intersection: 10}\n",
      ids.For("shop"));
  SiloSide bank = MakeSilo(p, "bank", kAllowVertical, ids.For("bank"));
  transport::RemoteVerticalParty bank_party(bank.connection.get(), job, "r");
  transport::RemoteVerticalParty shop_party(shop.connection.get(), job, "r");
  ASSERT_TRUE(bank_party.Open().ok());
  ASSERT_TRUE(shop_party.Open().ok());
  orchestrator::VerticalRunOptions options = Options();
  options.domain = "fedsilo/vertical/r";
  orchestrator::VerticalRun run(job, {&bank_party, &shop_party}, options);
  StatusOr<orchestrator::VerticalAlignment> a = run.Align();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(run.Train(*a).ok());
  StatusOr<ModelFile> bottom = ReadModelStateFile(p.dir + "/state-shop/vertical/r/bottom.fsm");
  ASSERT_TRUE(bottom.ok()) << bottom.status();
  ASSERT_FALSE(bottom->state.tensors().empty());
  const Tensor& first = bottom->state.tensors()[0];
  EXPECT_EQ(first.shape().back(), 1) << "the first layer reads one column";
  // A policy may name the only parties it works with, and the fewest people
  // it aligns with them.
  SiloSide picky =
      MakeSilo(p, "shop", "datasets:\n  people:\n    vertical: {allow: true, peers: [telco]}\n",
               ids.For("shop"));
  Status stranger = transport::RemoteVerticalParty(picky.connection.get(), job, "r2").Open();
  EXPECT_EQ(stranger.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(stranger.message()),
              HasSubstr("'bank' is not one (datasets.people.vertical.peers)"));
  {
    SiloSide few =
        MakeSilo(p, "shop", "datasets: {people: {vertical: {allow: true}}}\n", ids.For("shop"));
    SiloSide owner = MakeSilo(p, "bank", kAllowVertical, ids.For("bank"));
    transport::RemoteVerticalParty a(owner.connection.get(), job, "r3");
    transport::RemoteVerticalParty b(few.connection.get(), job, "r3");
    ASSERT_TRUE(a.Open().ok() && b.Open().ok());
    orchestrator::VerticalRunOptions o = Options();
    o.domain = "fedsilo/vertical/r3";
    StatusOr<orchestrator::VerticalAlignment> small =
        orchestrator::VerticalRun(job, {&a, &b}, o).Align();
    EXPECT_EQ(small.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(small.status().message()),
                HasSubstr("this party's policy takes part with 100 or more "
                          "(vertical.min_intersection)"));
  }
  // A column the table does not offer, or its id, is refused by name.
  for (const std::string& column : {"nope", "id"}) {
    SiloSide bad =
        MakeSilo(p, "shop",
                 absl::StrCat("datasets:\n  people:\n    vertical: {allow: true, columns: [",
                              column, "]}\n"),
                 ids.For("shop"));
    Status opened = transport::RemoteVerticalParty(bad.connection.get(), job, "r-" + column).Open();
    EXPECT_THAT(std::string(opened.message()), HasSubstr(absl::StrCat("column '", column, "'")));
  }
}

// Silos holding `p`'s tables (each with its state in state_dir(name)), and
// run `run_id` of `job` opened at each in the wire's form.
struct WireParties {
  std::vector<SiloSide> silos;
  std::vector<std::unique_ptr<transport::RemoteVerticalParty>> remote;
  std::vector<transport::VerticalParty*> pointers;
};
StatusOr<WireParties> OpenAtSilos(const People& p, const JobConfig& job, const std::string& run_id,
                                  const Identities& ids,
                                  const std::function<std::string(const std::string&)>& state_dir) {
  WireParties out;
  for (const std::string& name : job.federation.silos) {
    out.silos.push_back(MakeSilo(p, name, kAllowVertical, ids.For(name), state_dir(name)));
    out.remote.push_back(std::make_unique<transport::RemoteVerticalParty>(
        out.silos.back().connection.get(), job, run_id));
    FEDSILO_RETURN_IF_ERROR(out.remote.back()->Open());
    out.pointers.push_back(out.remote.back().get());
  }
  return out;
}

// The area under the ROC curve of a predictions file's p_1 against its
// labels (the last column).
double AucOf(const std::string& csv) {
  std::vector<std::pair<double, int>> scored;
  for (const std::string& line :
       std::vector<std::string>(absl::StrSplit(csv, '\n', absl::SkipEmpty()))) {
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f[0] == "id") continue;
    scored.emplace_back(std::stod(f[3]), std::stoi(f.back()));
  }
  double pairs = 0, right = 0;
  for (const auto& [pos, l] : scored) {
    if (l != 1) continue;
    for (const auto& [neg, m] : scored) {
      if (m != 0) continue;
      pairs += 1;
      right += pos > neg ? 1 : pos == neg ? 0.5 : 0;
    }
  }
  return pairs > 0 ? right / pairs : 0;
}

// A vertical job's TorchScript module: a bottom model per party of `parties`
// (bank 2 columns, shop 2, telco 1), two linear layers (fc1, fc2) to a cut
// of `cut` with ReLU, written without Python. Its weights are zeros: each
// party draws its own.
std::string BottomsModule(const std::string& path, const std::vector<std::string>& parties,
                          int cut) {
  ml::ScriptedModule bottoms;
  for (const std::string& party : parties) {
    const int64_t columns = party == "telco" ? 1 : 2;
    ml::ScriptedModule fc1, fc2;
    fc1.parameters = {{"weight", {8, columns}}, {"bias", {8}}};
    fc2.parameters = {{"weight", {cut, 8}}, {"bias", {cut}}};
    for (ml::ScriptedModule* fc : {&fc1, &fc2}) {
      fc->methods =
          "def forward(self, x):\n"
          "    return torch.matmul(x, self.weight.t()) + self.bias\n";
    }
    ml::ScriptedModule bottom;
    bottom.submodules = {{"fc1", fc1}, {"fc2", fc2}};
    bottom.methods =
        "def forward(self, x):\n"
        "    return torch.relu(self.fc2.forward(torch.relu(self.fc1.forward(x))))\n";
    bottoms.submodules.emplace_back(party, bottom);
  }
  const Status written = ml::WriteScriptedModule(bottoms, path);
  EXPECT_TRUE(written.ok()) << written;
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Bottom models from the job's TorchScript module: each silo checks the
// module against its policy and its digest, runs its own submodule in a
// sandbox, keeps it with its part, and predicts with it.
TEST(VerticalTest, TorchScriptBottomModelsRunInEachSilosSandboxAndPredict) {
  const People p = MakePeople("torchscript", 400, 31);
  const People fresh = MakePeople("torchscript-new", 300, 32);
  const std::vector<std::string> parties = {"bank", "shop", "telco"};
  const std::string module = BottomsModule(p.dir + "/bottoms.pt", parties, 6);
  const std::string digest = secure::BytesDigest(module);
  JobConfig job = Job(parties);
  job.model.kind = ModelKind::kTorchScript;
  job.model.torchscript = absl::StrCat("sha256:", digest);
  job.vertical.cut_width = 6;
  job.vertical.top_hidden = {12};
  const ml::Sandbox sandbox{FEDSILO_TEST_BINARY};
  const std::string allowing = absl::StrCat(
      "datasets:\n  people:\n    vertical: {allow: true, min_intersection: 10}\n"
      "    allowed_models: [sha256:",
      digest, "]\n");
  const Identities ids;
  const auto state = [&](const std::string& name) { return absl::StrCat(p.dir, "/state-", name); };
  // Opens `run_id` of `j` at silos holding `people`'s tables, with the
  // module sent beside the job.
  const auto open =
      [&](const People& people, const JobConfig& j, const std::string& run_id,
          const std::string& policy, const std::string& bytes, std::vector<SiloSide>* silos,
          std::vector<std::unique_ptr<transport::RemoteVerticalParty>>* remote) -> Status {
    for (const std::string& name : j.federation.silos) {
      silos->push_back(MakeSilo(people, name, policy, ids.For(name), state(name)));
      silos->back().runtime->SetSandbox(&sandbox);
      remote->push_back(std::make_unique<transport::RemoteVerticalParty>(
          silos->back().connection.get(), j, run_id));
      FEDSILO_RETURN_IF_ERROR(remote->back()->Open(bytes));
    }
    return absl::OkStatus();
  };
  const auto run = [&](const JobConfig& j, const std::string& run_id,
                       const std::vector<std::unique_ptr<transport::RemoteVerticalParty>>& remote)
      -> StatusOr<orchestrator::VerticalResult> {
    std::vector<transport::VerticalParty*> pointers;
    for (const auto& r : remote) pointers.push_back(r.get());
    orchestrator::VerticalRunOptions options = Options();
    options.domain = absl::StrCat("fedsilo/vertical/", run_id);
    orchestrator::VerticalRun vertical(j, pointers, options);
    FEDSILO_ASSIGN_OR_RETURN(orchestrator::VerticalAlignment a, vertical.Align());
    return vertical.Train(a);
  };

  std::vector<SiloSide> silos;
  std::vector<std::unique_ptr<transport::RemoteVerticalParty>> remote;
  ASSERT_TRUE(open(p, job, "ts-1", allowing, module, &silos, &remote).ok());
  StatusOr<orchestrator::VerticalResult> trained = run(job, "ts-1", remote);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->rounds_completed, 3);
  std::printf("test AUC with TorchScript bottom models: %.4f\n", trained->final_metrics.at("auc"));
  EXPECT_GT(trained->final_metrics.at("auc"), 0.75);
  for (const std::string& name : parties) {
    // Its part: the submodule's trained weights, and the module they fit.
    const std::string dir = state(name) + "/vertical/ts-1/";
    StatusOr<ModelFile> bottom = ReadModelStateFile(dir + "bottom.fsm");
    ASSERT_TRUE(bottom.ok()) << name << bottom.status();
    ASSERT_EQ(bottom->state.tensors().size(), 4u) << name;
    EXPECT_EQ(bottom->state.tensors()[0].name(), "fc1.weight");
    EXPECT_EQ(ReadProtectedFile(dir + "bottom.pt").value(), module) << name;
    // The module kept as shipped modules are, under its digest.
    EXPECT_TRUE(std::filesystem::exists(ShippedModulePath(state(name) + "/models", digest)));
  }

  // Predicting with the kept parts: each party's module comes from its part.
  JobConfig predict = job;
  predict.vertical.predict_with = "ts-1";
  predict.training.rounds = 1;
  {
    std::vector<SiloSide> at;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach;
    ASSERT_TRUE(open(fresh, predict, "ts-score", allowing, "", &at, &reach).ok());
    ASSERT_TRUE(run(predict, "ts-score", reach).ok());
    StatusOr<std::string> csv =
        ReadProtectedFile(state("bank") + "/vertical/ts-score/predictions.csv");
    ASSERT_TRUE(csv.ok()) << csv.status();
    std::printf("AUC of the kept TorchScript parts on new people: %.4f\n", AucOf(*csv));
    EXPECT_GT(AucOf(*csv), 0.75);
  }

  // A module swapped into a kept part is not the one its weights were
  // trained in: refused.
  {
    const std::string kept = state("shop") + "/vertical/ts-1/bottom.pt";
    const std::string original = ReadProtectedFile(kept).value();
    ASSERT_TRUE(
        WriteProtectedFile(kept, BottomsModule(p.dir + "/other.pt", parties, 6) + " ").ok());
    std::vector<SiloSide> at;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach;
    Status refused = open(fresh, predict, "ts-score-3", allowing, "", &at, &reach);
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(refused.message()),
                HasSubstr("is not the module its part was trained in"));
    ASSERT_TRUE(WriteProtectedFile(kept, original).ok());
  }

  // A silo runs only the modules its owner listed (default deny), and only
  // with the bytes of the digest the job names.
  {
    std::vector<SiloSide> at;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach;
    JobConfig other = job;
    Status refused = open(p, other, "ts-2", kAllowVertical, module, &at, &reach);
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(refused.message()), HasSubstr("is not among its allowed_models"));
  }
  const std::string tampered = module + "x";
  JobConfig swapped = job;
  swapped.model.torchscript = absl::StrCat("sha256:", secure::BytesDigest(tampered));
  const std::string allowing_both =
      absl::StrCat(allowing.substr(0, allowing.size() - 2), ", ", swapped.model.torchscript, "]\n");
  {
    // The digest of other bytes than those sent: refused before it is kept.
    std::vector<SiloSide> at;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach;
    Status refused = open(p, swapped, "ts-3", allowing_both, module, &at, &reach);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(refused.message()), HasSubstr("does not match its digest"));
    EXPECT_FALSE(std::filesystem::exists(
        ShippedModulePath(state("bank") + "/models", secure::BytesDigest(tampered))));
  }
  {
    // A module without a party's bottom model: refused by that party, by
    // name, before any id is blinded.
    const std::string two = BottomsModule(p.dir + "/two.pt", {"bank", "shop"}, 6);
    JobConfig partial = job;
    partial.model.torchscript = absl::StrCat("sha256:", secure::BytesDigest(two));
    std::vector<SiloSide> at;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach;
    Status refused = open(p, partial, "ts-4",
                          absl::StrCat(allowing.substr(0, allowing.size() - 2), ", ",
                                       partial.model.torchscript, "]\n"),
                          two, &at, &reach);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(refused.message()),
                HasSubstr("party 'telco': the job's TorchScript module (model.torchscript) has no "
                          "submodule 'telco'"));
    // And one whose submodule does not give the cut layer's width.
    JobConfig wider = job;
    wider.vertical.cut_width = 4;
    std::vector<SiloSide> more;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach_more;
    refused = open(p, wider, "ts-5", allowing, module, &more, &reach_more);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(refused.message()), HasSubstr("returned [2, 6]"));
  }
  {
    // Predicting runs the kept module: a policy that no longer lists it
    // refuses.
    std::vector<SiloSide> at;
    std::vector<std::unique_ptr<transport::RemoteVerticalParty>> reach;
    Status refused = open(fresh, predict, "ts-score-2", kAllowVertical, "", &at, &reach);
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(refused.message()), HasSubstr("is not among its allowed_models"));
  }
}

// A job with vertical.predict_with scores new people with the parts each
// silo kept of a run it trained: aligned as in training, every row scored
// once, none trained, and the predictions kept by the label owner alone.
TEST(VerticalTest, ASiloPredictsWithThePartItKeptOfARun) {
  const People trained_on = MakePeople("predict-train", 400, 21);
  const People fresh = MakePeople("predict-new", 300, 22);
  JobConfig job = Job({"bank", "shop", "telco"});
  job.model.hidden = {8};
  job.vertical.cut_width = 6;
  job.vertical.top_hidden = {12};
  const Identities ids;
  const auto state = [&](const std::string& name) {
    return absl::StrCat(trained_on.dir, "/state-", name);
  };
  // Trains run `run_id` of `job` at silos holding `p`'s tables.
  const auto train = [&](const People& p, const JobConfig& j,
                         const std::string& run_id) -> StatusOr<orchestrator::VerticalResult> {
    FEDSILO_ASSIGN_OR_RETURN(WireParties parties, OpenAtSilos(p, j, run_id, ids, state));
    orchestrator::VerticalRunOptions options = Options();
    options.domain = absl::StrCat("fedsilo/vertical/", run_id);
    orchestrator::VerticalRun vertical(j, parties.pointers, options);
    FEDSILO_ASSIGN_OR_RETURN(orchestrator::VerticalAlignment a, vertical.Align());
    return vertical.Train(a);
  };
  StatusOr<orchestrator::VerticalResult> trained = train(trained_on, job, "train-1");
  ASSERT_TRUE(trained.ok()) << trained.status();
  for (const std::string& name : job.federation.silos) {
    EXPECT_TRUE(std::filesystem::exists(state(name) + "/vertical/train-1/statistics.fsm")) << name;
  }

  JobConfig predict = job;
  predict.vertical.predict_with = "train-1";
  predict.training.rounds = 1;
  StatusOr<WireParties> opened_at = OpenAtSilos(fresh, predict, "score-1", ids, state);
  ASSERT_TRUE(opened_at.ok()) << opened_at.status();
  const std::vector<transport::VerticalParty*>& pointers = opened_at->pointers;
  orchestrator::VerticalRunOptions options = Options();
  options.domain = "fedsilo/vertical/score-1";
  orchestrator::VerticalRun scoring(predict, pointers, options);
  StatusOr<orchestrator::VerticalAlignment> a = scoring.Align();
  ASSERT_TRUE(a.ok()) << a.status();
  const std::vector<std::string> shared =
      SharedOrder({fresh.at_bank, fresh.at_shop, fresh.at_telco}, 5);
  EXPECT_EQ(a->intersection, static_cast<int64_t>(shared.size()));
  EXPECT_EQ(a->train, 0);
  StatusOr<orchestrator::VerticalResult> result = scoring.Train(*a);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rounds_completed, 1);
  // The orchestrator can ask for no training: there is none to ask for (and
  // a refused step ends the run at the silo).
  EXPECT_EQ(pointers[2]->Forward({false, {0}}).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(pointers[1]->BeginRound(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pointers[0]->TopStep({false, {0}}, {{}, {}}).status().code(),
            absl::StatusCode::kPermissionDenied);
  // The label owner kept a prediction for each shared person, in the order
  // of its table, and they are the trained model's: fresh weights would
  // score about 0.5.
  StatusOr<std::string> csv =
      ReadProtectedFile(state("bank") + "/vertical/score-1/predictions.csv");
  ASSERT_TRUE(csv.ok()) << csv.status();
  const std::vector<std::string> lines = absl::StrSplit(*csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), shared.size() + 1);
  EXPECT_EQ(lines[0], "id,predicted,p_0,p_1,label");
  std::set<std::string> predicted;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string id = lines[i].substr(0, lines[i].find(','));
    predicted.insert(id);
    EXPECT_EQ(std::stoi(lines[i].substr(lines[i].rfind(',') + 1)), fresh.label.at(id)) << id;
  }
  EXPECT_EQ(predicted, std::set<std::string>(shared.begin(), shared.end()));
  Status opened;
  const double auc = AucOf(*csv);
  std::printf("AUC of the kept model on new people: %.4f (its last test AUC %.4f)\n", auc,
              trained->final_metrics.at("auc"));
  EXPECT_GT(auc, 0.75);
  // No metrics leave a run that predicts: with its model fixed, metrics of
  // two sets of rows the orchestrator chose would give away a label.
  EXPECT_TRUE(result->final_metrics.empty());
  for (const std::string& name : {"shop", "telco"}) {
    EXPECT_FALSE(std::filesystem::exists(state(name) + "/vertical/score-1/predictions.csv"));
  }

  // A step that fails part-way ends the run at the silo: rows it counted but
  // did not score cannot shift the predictions onto other people.
  {
    StatusOr<WireParties> again = OpenAtSilos(fresh, predict, "score-6", ids, state);
    ASSERT_TRUE(again.ok()) << again.status();
    const std::vector<transport::VerticalParty*>& reach = again->pointers;
    orchestrator::VerticalRunOptions o = Options();
    o.domain = "fedsilo/vertical/score-6";
    StatusOr<orchestrator::VerticalAlignment> aligned =
        orchestrator::VerticalRun(predict, reach, o).Align();
    ASSERT_TRUE(aligned.ok()) << aligned.status();
    ASSERT_TRUE(reach[0]->BeginRound(1).ok());
    const size_t cut = static_cast<size_t>(predict.vertical.cut_width);
    EXPECT_FALSE(reach[0]
                     ->TopEvaluate({true, {0}},
                                   {std::vector<float>(cut + 1, 0.f), std::vector<float>(cut, 0.f)})
                     .ok());
    EXPECT_EQ(
        reach[0]
            ->TopEvaluate({true, {1}}, {std::vector<float>(cut, 0.f), std::vector<float>(cut, 0.f)})
            .code(),
        absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(reach[0]->EndRound().status().message()),
                HasSubstr("has no vertical job 'score-6' open"));
    EXPECT_FALSE(std::filesystem::exists(state("bank") + "/vertical/score-6/predictions.csv"));
  }

  // A run id is used once at a silo, on any dataset: a training run under
  // the id of a kept part would replace it. A run cannot predict with itself.
  SiloSide replacer = MakeSilo(trained_on, "bank", kAllowVertical, ids.For("bank"), state("bank"));
  opened = transport::RemoteVerticalParty(replacer.connection.get(), job, "train-1").Open();
  EXPECT_EQ(opened.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(opened.message()), HasSubstr("a vertical job is opened once"));
  opened = transport::RemoteVerticalParty(replacer.connection.get(), predict, "train-1").Open();
  EXPECT_EQ(opened.code(), absl::StatusCode::kFailedPrecondition);

  // A run a silo did not take part in, or with other parties or another
  // order: refused by name.
  JobConfig unknown = predict;
  unknown.vertical.predict_with = "train-9";
  SiloSide bank = MakeSilo(fresh, "bank", kAllowVertical, ids.For("bank"), state("bank"));
  opened = transport::RemoteVerticalParty(bank.connection.get(), unknown, "score-2").Open();
  EXPECT_EQ(opened.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(opened.message()), HasSubstr("kept no model of run 'train-9'"));
  JobConfig reordered = predict;
  reordered.federation.silos = {"shop", "bank", "telco"};
  opened = transport::RemoteVerticalParty(bank.connection.get(), reordered, "score-3").Open();
  EXPECT_EQ(opened.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(opened.message()), HasSubstr("in the same order"));
  // A column the model reads that the silo's policy no longer exposes.
  SiloSide narrowed = MakeSilo(
      fresh, "shop",
      "datasets:\n  people:\n    vertical: {allow: true, columns: [b2], min_intersection: 10}\n",
      ids.For("shop"), state("shop"));
  opened = transport::RemoteVerticalParty(narrowed.connection.get(), predict, "score-4").Open();
  EXPECT_EQ(opened.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(opened.message()), HasSubstr("reads column 'b1'"));
  // Another party's part put in the silo's place is not taken for its own.
  std::filesystem::copy_file(state("bank") + "/vertical/train-1/bottom.fsm",
                             state("shop") + "/vertical/train-1/bottom.fsm",
                             std::filesystem::copy_options::overwrite_existing);
  SiloSide shop = MakeSilo(fresh, "shop", kAllowVertical, ids.For("shop"), state("shop"));
  opened = transport::RemoteVerticalParty(shop.connection.get(), predict, "score-5").Open();
  EXPECT_EQ(opened.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(opened.message()), HasSubstr("is not its part of run 'train-1'"));
}

}  // namespace
}  // namespace fedsilo
