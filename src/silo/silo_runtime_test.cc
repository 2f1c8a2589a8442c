#include "silo/silo_runtime.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/feature_statistics.h"
#include "core/score_histogram.h"
#include "ml/dataset_catalog.h"
#include "ml/model.h"
#include "ml/sandbox.h"
#include "ml/scripted_module.h"
#include "ml/tabular.h"
#include "secure/audit_log.h"
#include "silo/privacy_guard.h"

namespace fedsilo::silo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/catalog_" + name + ".yaml";
  std::ofstream(path) << text;
  return path;
}

TEST(DatasetCatalogTest, ReadsNamesAndShares) {
  auto catalog = LoadDatasetCatalog(Write(
      "good",
      "datasets:\n  digits: {builtin: digits, share: job}\n  cancer: {builtin: breast_cancer}\n"));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  EXPECT_EQ(catalog->at("digits").builtin, "digits");
  EXPECT_TRUE(catalog->at("digits").share_by_job);
  EXPECT_FALSE(catalog->at("cancer").share_by_job);
  SiloRuntime runtime("s", *catalog, "/nonexistent");
  EXPECT_EQ(runtime.DatasetNames(), (std::vector<std::string>{"cancer", "digits"}));
}

TEST(DatasetCatalogTest, ErrorsNameFileLineAndKey) {
  struct Case {
    const char* text;
    const char* expected;
  };
  for (const Case& c : {
           Case{"datasets:\n  digits: {builtin: digts}\n",
                ":2: datasets.digits.builtin: unknown data set 'digts'"},
           Case{"datasets:\n  digits: {builtin: digits, shared: job}\n",
                "unknown key 'datasets.digits.shared' (did you mean 'datasets.digits.share'?)"},
           Case{"datasets:\n  digits: {builtin: digits, share: all}\n",
                "share: the only value is 'job'"},
           Case{"datasets:\n  digits: {share: job}\n",
                "datasets.digits: needs builtin (a built-in data set), csv (a file) or idx (a "
                "folder)"},
           Case{"datasets:\n  t: {csv: t.csv}\n", "datasets.t.label: is required"},
           Case{"datasets:\n  t: {csv: t.csv, builtin: digits, label: y}\n",
                "give either builtin or csv"},
           Case{"datasets:\n  t: {csv: t.csv, label: y, missing: mean}\n",
                "datasets.t.missing: unknown value 'mean'; one of: error, drop, impute"},
           Case{"datasets:\n  t: {csv: t.csv, label: y, categorical: merchant}\n",
                "datasets.t.categorical: must be a list of column names"},
           Case{"datasets:\n  t: {builtin: digits, label: y}\n", "datasets.t.label: needs csv"},
           Case{"files: {}\n", "expected 'datasets:'"},
           Case{"datasets: [\n", "not valid YAML"},
       }) {
    auto catalog = LoadDatasetCatalog(Write("bad", c.text));
    ASSERT_FALSE(catalog.ok()) << c.text;
    EXPECT_EQ(catalog.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(catalog.status().message(), HasSubstr(c.expected));
    EXPECT_THAT(catalog.status().message(), HasSubstr("catalog_bad.yaml"));
  }
  EXPECT_EQ(LoadDatasetCatalog("/nonexistent/datasets.yaml").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DatasetCatalogTest, CsvEntriesNameTheSilosOwnFile) {
  const std::string path = Write("csv",
                                 "datasets:\n  cards:\n    csv: data/{silo}.csv\n"
                                 "    label: is_fraud\n    features: [amount, merchant]\n"
                                 "    categorical: [merchant]\n    missing: drop\n");
  auto catalog = LoadDatasetCatalog(path, "east");
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  const DatasetEntry& e = catalog->at("cards");
  EXPECT_EQ(e.csv,
            (std::filesystem::path(::testing::TempDir()) / "data/east.csv").lexically_normal());
  EXPECT_EQ(e.schema.label, "is_fraud");
  EXPECT_EQ(e.schema.features, (std::vector<std::string>{"amount", "merchant"}));
  EXPECT_EQ(e.schema.categorical, (std::vector<std::string>{"merchant"}));
  EXPECT_EQ(e.schema.missing, ml::MissingValues::kDrop);
}

// A vertical job's party: an `id` column, and a label only at the label
// owner; a table without either is still refused.
TEST(DatasetCatalogTest, AnIdColumnLetsATableGoWithoutALabel) {
  auto catalog = LoadDatasetCatalog(
      Write("ids", "datasets:\n  customers:\n    csv: t.csv\n    id: customer_id\n"));
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  EXPECT_EQ(catalog->at("customers").schema.id, "customer_id");
  EXPECT_TRUE(catalog->at("customers").schema.label.empty());
  auto neither = LoadDatasetCatalog(Write("neither", "datasets:\n  customers:\n    csv: t.csv\n"));
  EXPECT_THAT(std::string(neither.status().message()), HasSubstr(".label: is required"));
  auto bad = LoadDatasetCatalog(
      Write("bad_id", "datasets:\n  customers:\n    csv: t.csv\n    id: [a, b]\n"));
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("datasets.customers.id: must be a column name"));
  auto builtin =
      LoadDatasetCatalog(Write("builtin_id", "datasets:\n  d:\n    builtin: digits\n    id: x\n"));
  EXPECT_THAT(std::string(builtin.status().message()), HasSubstr("datasets.d.id: needs csv"));
}

// A silo with its own CSV file: the statistics task sums its training rows
// (never sending a row), training needs the federation's statistics, and the
// evaluate task scores the model it is sent without training.
TEST(SiloRuntimeTest, CsvDatasetAnswersStatisticsTrainsAndEvaluates) {
  const std::string dir = ::testing::TempDir() + "/silo_runtime_csv";
  std::filesystem::remove_all(dir);  // its ledgers would pin an earlier run's jobs
  std::filesystem::create_directories(dir);
  {
    std::ofstream csv(dir + "/east.csv");
    csv << "amount,merchant,label\n";
    for (int i = 0; i < 100; ++i) {
      csv << (i % 10 == 0 ? 90 + i % 7 : 10 + i % 13) << "," << (i % 3 == 0 ? "atm" : "shop") << ","
          << (i % 10 == 0 ? 1 : 0) << "\n";
    }
  }
  std::ofstream(dir + "/datasets.yaml")
      << "datasets:\n  cards: {csv: '{silo}.csv', label: label, categorical: [merchant]}\n";
  auto catalog = LoadDatasetCatalog(dir + "/datasets.yaml", "east");
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  JobConfig job;
  job.data.dataset = "cards";
  job.data.silo_test_fraction = 0.2;
  job.model.kind = ModelKind::kLogistic;
  job.preprocess.scale = ScaleKind::kStandard;
  job.preprocess.categories = {{"merchant", {"atm", "shop"}}};
  job.training.learning_rate = 0.5;
  job.training.local_epochs = 5;
  transport::TaskRequest stats{"run", 0, 1, &job, nullptr, transport::StatisticsTask{}};
  // By default a class of fewer than ten rows is not described: 8 here.
  SiloRuntime strict("east", *catalog, "/nonexistent");
  EXPECT_THAT(std::string(strict.RunTask(stats).status().message()),
              HasSubstr("class 1 has fewer than 10 training rows, too few to describe "
                        "(statistics.min_count)"));
  std::ofstream(dir + "/policy.yaml") << "datasets:\n  cards: {statistics: {min_count: 5}}\n";
  auto guard = PrivacyGuard::Open(dir + "/policy.yaml", "");
  ASSERT_TRUE(guard.ok()) << guard.status();
  SiloRuntime runtime("east", *catalog, "/nonexistent", guard->get());
  // Minmax scaling needs the minima and maxima, which the policy keeps.
  job.preprocess.scale = ScaleKind::kMinMax;
  EXPECT_THAT(std::string(runtime.RunTask(stats).status().message()),
              HasSubstr("(statistics.share_min_max: false)"));
  job.preprocess.scale = ScaleKind::kStandard;
  // A policy that allows only DP training refuses the statistics: they are
  // exact sums, not differentially private.
  {
    std::ofstream(dir + "/dp-only.yaml")
        << "datasets:\n  cards: {require_local_dp: true, statistics: {min_count: 5}}\n";
    auto dp_only = PrivacyGuard::Open(dir + "/dp-only.yaml", "");
    ASSERT_TRUE(dp_only.ok()) << dp_only.status();
    SiloRuntime dp_runtime("east", *catalog, "/nonexistent", dp_only->get());
    // (A job without DP is refused before it gets that far.)
    JobConfig dp_job = job;
    dp_job.privacy.dp.mode = DpMode::kLocal;
    dp_job.privacy.dp.noise_multiplier = 1.0;
    transport::TaskRequest dp_stats = stats;
    dp_stats.job = &dp_job;
    dp_stats.run_id = "dp-only";
    auto refused = dp_runtime.RunTask(dp_stats);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr("the federated statistics are exact sums, not differentially private, "
                          "and the policy allows only DP training (require_local_dp)"));
  }
  // A DP job is admitted at its statistics task, the run's first, with the
  // plan its training will follow: its steps and sampling rate over the
  // silo's training rows, reserved before any round trains.
  {
    std::ofstream(dir + "/budget.yaml")
        << "datasets:\n  cards: {max_epsilon: 100, statistics: {min_count: 5}}\n";
    auto budgeted = PrivacyGuard::Open(dir + "/budget.yaml", dir + "/plan-ledger.json");
    ASSERT_TRUE(budgeted.ok()) << budgeted.status();
    SiloRuntime dp_runtime("east", *catalog, "/nonexistent", budgeted->get());
    JobConfig dp_job = job;
    dp_job.training.rounds = 3;
    dp_job.training.batch_size = 16;
    dp_job.privacy.dp.mode = DpMode::kLocal;
    dp_job.privacy.dp.noise_multiplier = 1.0;
    transport::TaskRequest dp_stats = stats;
    dp_stats.job = &dp_job;
    dp_stats.run_id = "dp-plan";
    auto answered = dp_runtime.RunTask(dp_stats);
    ASSERT_TRUE(answered.ok()) << answered.status();
    const std::vector<LedgerEntry> entries = (*budgeted)->Entries();
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].run_id, "dp-plan");
    EXPECT_TRUE(entries[0].dp);
    EXPECT_EQ(entries[0].steps, 0);  // nothing trained yet
    EXPECT_EQ(entries[0].planned_steps, 3 * 5 * ml::DpStepsPerEpoch(80, 16));
    EXPECT_DOUBLE_EQ(entries[0].sample_rate, ml::DpSampleRate(80, 16));
    EXPECT_GT(entries[0].planned_epsilon, 0);
  }
  // A category of a handful of rows is refused too (its one-hot sum counts it).
  job.preprocess.categories = {{"merchant", {"atm", "shop", "vip"}}};
  {
    std::ofstream rare(dir + "/rare.csv");
    rare << "amount,merchant,label\n";
    for (int i = 0; i < 100; ++i) {
      rare << 10 + i % 13 << ","
           << (i < 3        ? "vip"
               : i % 3 == 0 ? "atm"
                            : "shop")
           << "," << (i % 10 == 0 ? 1 : 0) << "\n";
    }
  }
  {
    DatasetCatalog rare_catalog = *catalog;
    rare_catalog["cards"].csv = dir + "/rare.csv";
    SiloRuntime rare_runtime("east", rare_catalog, "/nonexistent", guard->get());
    transport::TaskRequest rare_stats = stats;
    rare_stats.run_id = "rare";
    EXPECT_THAT(std::string(rare_runtime.RunTask(rare_stats).status().message()),
                HasSubstr("category 'merchant=vip' has fewer than 5 training rows"));
  }
  job.preprocess.categories = {{"merchant", {"atm", "shop"}}};
  auto sums = runtime.RunTask(stats);
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(sums->num_examples, 80);
  auto parsed = FeatureSums::FromState(sums->update, "east");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->features,
            (std::vector<std::string>{"amount", "merchant=atm", "merchant=shop"}));
  EXPECT_EQ(parsed->class_counts, (std::vector<int64_t>{72, 8}));  // stratified
  EXPECT_TRUE(parsed->min_max_withheld);  // single records' values stay here
  EXPECT_FALSE(parsed->Finish().has_min_max());

  // Training before the statistics are known is refused, naming why.
  auto model = ml::Model::Create({job.model, {3}, 2}, 1);
  ASSERT_TRUE(model.ok());
  const ModelState global = (*model)->GetState();
  transport::TaskRequest fit{"run", 1, 1, &job, nullptr, transport::FitTask{&global}};
  auto early = runtime.RunTask(fit);
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(early.status().message(), HasSubstr("no preprocess.statistics"));

  job.preprocess.statistics = parsed->Finish();
  auto trained = runtime.RunTask(
      transport::TaskRequest{"run2", 1, 1, &job, nullptr, transport::FitTask{&global}});
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->num_examples, 80);
  EXPECT_GT(trained->metrics.at("test_auc"), 0.9);
  ModelState local = global;
  for (size_t t = 0; t < local.size(); ++t) {
    for (size_t i = 0; i < local.tensors()[t].floats().size(); ++i) {
      local.mutable_tensors()[t].floats()[i] += trained->update.tensors()[t].floats()[i];
    }
  }
  transport::TaskRequest evaluate{"run2", 1, 1, &job, nullptr, transport::EvaluateTask{&local}};
  auto scored = runtime.RunTask(evaluate);
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(scored->num_examples, 20);
  // The scores travel only as a histogram, from which the AUC follows.
  auto histogram = ScoreHistogram::FromState(scored->update, "east");
  ASSERT_TRUE(histogram.ok()) << histogram.status();
  EXPECT_NEAR(histogram->Auc(), scored->metrics.at("auc"), 0.02);
  EXPECT_DOUBLE_EQ(scored->metrics.at("accuracy"), trained->metrics.at("test_accuracy"));
  EXPECT_DOUBLE_EQ(scored->metrics.at("auc"), trained->metrics.at("test_auc"));
  EXPECT_EQ(scored->metrics.at("true_positives") + scored->metrics.at("false_negatives"), 2);

  // A silo whose file lacks the job's categorical vocabulary names it.
  job.preprocess.categories.clear();
  // (Under run "run" the changed job is refused: the run's job is pinned.)
  EXPECT_THAT(std::string(runtime.RunTask(stats).status().message()),
              HasSubstr("carries a job other than the one admitted"));
  stats.run_id = "run3";
  auto no_vocab = runtime.RunTask(stats);
  EXPECT_EQ(no_vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_vocab.status().message(),
              HasSubstr("silo 'east': dataset 'cards': categorical column 'merchant' has no "
                        "vocabulary"));
  EXPECT_THAT(no_vocab.status().message(), Not(HasSubstr("east.csv")));  // no path leaves
}

// An IDX file of unsigned bytes with the given dimensions.
void WriteIdx(const std::string& path, const std::vector<uint32_t>& dims,
              const std::vector<uint8_t>& values) {
  std::ofstream out(path, std::ios::binary);
  out << '\0' << '\0' << '\x08' << static_cast<char>(dims.size());
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out << static_cast<char>((d >> shift) & 0xff);
  }
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size()));
}

// A silo's own images: a folder of IDX files. Their statistics are those of
// all pixel values, with the images' shape; training scales with them.
TEST(SiloRuntimeTest, IdxFolderAnswersStatisticsWithItsShapeAndTrains) {
  const std::string dir = ::testing::TempDir() + "/silo_runtime_idx";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/west");
  std::vector<uint8_t> pixels, labels;
  for (int i = 0; i < 60; ++i) {
    const int label = i % 2;  // class 1: a bright bottom half
    labels.push_back(static_cast<uint8_t>(label));
    for (int p = 0; p < 16; ++p) pixels.push_back((p >= 8) == (label == 1) ? 200 : 10);
  }
  WriteIdx(dir + "/west/images-idx3-ubyte", {60, 4, 4}, pixels);
  WriteIdx(dir + "/west/labels-idx1-ubyte", {60}, labels);
  std::ofstream(dir + "/datasets.yaml") << "datasets:\n  scans: {idx: '{silo}'}\n";
  auto catalog = LoadDatasetCatalog(dir + "/datasets.yaml", "west");
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  EXPECT_EQ(catalog->at("scans").idx, std::filesystem::path(dir + "/west").lexically_normal());
  SiloRuntime runtime("west", *catalog, "/nonexistent");
  JobConfig job;
  job.data.dataset = "scans";
  job.data.silo_test_fraction = 0.25;
  job.model.kind = ModelKind::kLogistic;
  job.preprocess.scale = ScaleKind::kStandard;
  job.training.learning_rate = 0.1;
  transport::TaskRequest stats{"run", 0, 1, &job, nullptr, transport::StatisticsTask{}};
  auto reply = runtime.RunTask(stats);
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto sums = FeatureSums::FromState(reply->update, "west");
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(sums->shape, (std::vector<int64_t>{1, 4, 4}));
  EXPECT_EQ(sums->features, (std::vector<std::string>{"pixel"}));
  EXPECT_EQ(sums->count[0], 44 * 16);  // 22 of each class's 30 images train
  EXPECT_NEAR(sums->sum[0], 44 * 8 * (200 + 10) / 255.0, 1e-3);
  job.preprocess.statistics = sums->Finish();

  auto model = ml::Model::Create(ml::TabularModelSpec(job), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelState global = (*model)->GetState();
  auto trained = runtime.RunTask(
      transport::TaskRequest{"run", 1, 1, &job, nullptr, transport::FitTask{&global}});
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->num_examples, 44);
  EXPECT_EQ(trained->metrics.at("test_accuracy"), 1.0);

  // A fit or evaluate task must carry the model it starts from; refused
  // before a row is read, with the silo free for the next.
  for (const transport::TaskPayload& modelless :
       {transport::TaskPayload(transport::FitTask{}),
        transport::TaskPayload(transport::EvaluateTask{})}) {
    auto refused = runtime.RunTask(transport::TaskRequest{"run", 2, 1, &job, nullptr, modelless});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.status().message(),
                HasSubstr(absl::StrCat("a ", transport::TaskKindName(transport::KindOf(modelless)),
                                       " task carries no model")));
  }
  EXPECT_TRUE(runtime
                  .RunTask(transport::TaskRequest{"run", 2, 1, &job, nullptr,
                                                  transport::EvaluateTask{&global}})
                  .ok());

  // A folder that is not one images file and one labels file is named.
  WriteIdx(dir + "/west/t10k-images-idx3-ubyte", {1, 4, 4}, std::vector<uint8_t>(16, 0));
  SiloRuntime two("west", *catalog, "/nonexistent");
  auto ambiguous = two.RunTask(stats);
  EXPECT_EQ(ambiguous.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ambiguous.status().message(),
              HasSubstr("dataset 'scans': expected one IDX file whose name holds 'images' and "
                        "one whose name holds 'labels' in its folder, found 3 files"));
  EXPECT_THAT(ambiguous.status().message(), Not(HasSubstr("t10k")));
}

TEST(SiloRuntimeTest, TaskForADatasetTheSiloLacksIsRefusedByName) {
  SiloRuntime runtime("bank-a", {{"digits", {"digits", false}}}, "/nonexistent");
  JobConfig job;
  job.data.dataset = "mnist";
  ModelState global;
  transport::TaskRequest request{"run", 1, 1, &job, nullptr, transport::FitTask{&global}};
  auto reply = runtime.RunTask(request);
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(reply.status().message(),
              HasSubstr("silo 'bank-a' has no dataset 'mnist' (it offers: digits)"));
}

// Loading a TorchScript module runs its code: the silo loads only those in the
// folder its owner named, before touching any data.
TEST(SiloRuntimeTest, TorchScriptModelsLoadOnlyFromTheSilosModelsFolder) {
  const std::string dir = ::testing::TempDir() + "/silo_runtime_models";
  std::filesystem::create_directories(dir + "/allowed");
  JobConfig job;
  job.data.dataset = "digits";
  job.model.kind = ModelKind::kTorchScript;
  job.model.torchscript = dir + "/elsewhere/net.pt";
  ModelState global;
  transport::TaskRequest request{"run", 1, 1, &job, nullptr, transport::FitTask{&global}};

  SiloRuntime closed("bank-a", {{"digits", {"digits", false}}}, "/nonexistent");
  auto refused = closed.RunTask(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("loads no TorchScript models"));
  EXPECT_THAT(refused.status().message(), HasSubstr("--models-dir"));

  SiloRuntime open("bank-a", {{"digits", {"digits", false}}}, "/nonexistent");
  open.SetModelsDir(dir + "/allowed");
  auto outside = open.RunTask(request);
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(outside.status().message(), HasSubstr("is not in its models folder"));
  job.model.torchscript = dir + "/allowed/../elsewhere/net.pt";  // no way out by ".."
  EXPECT_EQ(open.RunTask(request).status().code(), absl::StatusCode::kFailedPrecondition);

  // Inside the folder the job gets as far as the data (absent here).
  job.model.torchscript = dir + "/allowed/net.pt";
  auto inside = open.RunTask(request);
  EXPECT_FALSE(inside.ok());
  EXPECT_THAT(inside.status().message(), Not(HasSubstr("models folder")));
}

// A module the orchestrator ships (a curious or hostile one) is refused unless
// the silo's policy lists it; even an allowed one runs only in the sandbox,
// whose op check refuses one that reads the silo's files.
TEST(SiloRuntimeTest, AShippedModuleIsDeniedByDefaultAndCheckedWhenAllowed) {
  const std::string dir = ::testing::TempDir() + "/silo_runtime_shipped";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/secret.txt") << std::string(64, 'S');
  ml::ScriptedModule thief;
  thief.parameters = {{"w", {64, 10}}, {"b", {10}}};
  thief.buffers = {{"loot", {64}}};
  thief.methods = "def forward(self, x):\n    self.loot = torch.from_file('" + dir +
                  "/secret.txt', False, 64, dtype=0).float()\n"
                  "    return torch.matmul(x, self.w) + self.b\n";
  ASSERT_TRUE(ml::WriteScriptedModule(thief, dir + "/thief.pt").ok());
  std::ifstream in(dir + "/thief.pt", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string digest = secure::BytesDigest(bytes);
  JobConfig job;
  job.data.dataset = "digits";
  job.model.kind = ModelKind::kTorchScript;
  job.model.torchscript = "sha256:" + digest;
  ModelState global;
  transport::TaskRequest request{"run", 1, 1, &job, nullptr, transport::FitTask{&global}};
  request.torchscript = &bytes;
  const ml::Sandbox sandbox{FEDSILO_TEST_BINARY};
  const DatasetCatalog catalog = {{"digits", {"digits", false}}};

  auto no_policy = PrivacyGuard::Open("", "");
  SiloRuntime closed("bank-a", catalog, ml::DefaultDataDir(), no_policy->get());
  closed.SetStateDir(dir + "/closed");
  closed.SetSandbox(&sandbox);
  auto denied = closed.RunTask(request);
  EXPECT_THAT(std::string(denied.status().message()), HasSubstr("is not among its allowed_models"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/closed/models"));  // not even kept

  std::ofstream(dir + "/any.yaml") << "allow_any_module: true\n";
  auto any = PrivacyGuard::Open(dir + "/any.yaml", "");
  SiloRuntime open("bank-a", catalog, ml::DefaultDataDir(), any->get());
  open.SetStateDir(dir + "/open");
  open.SetSandbox(&sandbox);
  auto refused = open.RunTask(request);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("refused: method 'forward' uses aten::from_file"));

  // The attack on the kept copy: someone who can write the silo's state
  // folder puts another module in its place. Allowed was a digest, so the
  // next task (which does not bring the module again) refuses to load it.
  const std::string kept = ShippedModulePath(dir + "/open/models", digest);
  ASSERT_TRUE(std::filesystem::exists(kept));
  ml::ScriptedModule other;
  other.parameters = {{"w", {64, 10}}, {"b", {10}}};
  other.methods = "def forward(self, x):\n    return torch.matmul(x, self.w) + self.b\n";
  ASSERT_TRUE(ml::WriteScriptedModule(other, kept).ok());
  transport::TaskRequest again = request;
  again.torchscript = nullptr;
  auto swapped = open.RunTask(again);
  ASSERT_FALSE(swapped.ok());
  EXPECT_THAT(std::string(swapped.status().message()), HasSubstr("does not match its digest"));
}

}  // namespace
}  // namespace fedsilo::silo
