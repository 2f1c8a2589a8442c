#include "ml/tabular.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"

namespace fedsilo::ml {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string WriteCsv(const std::string& name, const std::string& text) {
  const std::string dir = ::testing::TempDir() + "/tabular_test";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TabularSchema Schema() {
  TabularSchema s;
  s.label = "fraud";
  s.categorical = {"merchant"};
  return s;
}

PreprocessConfig Categories() {
  PreprocessConfig p;
  p.categories = {{"merchant", {"atm", "online", "shop"}}};
  return p;
}

TEST(TabularTest, ReadsFeaturesOneHotCategoriesAndLabels) {
  const std::string path = WriteCsv("ok.csv",
                                    "amount,merchant,\"hour\",fraud\n"
                                    "12.5,online,3,0\n"
                                    "\"1,000\",atm,23,1\n");
  // "1,000" is one quoted cell but not a number.
  StatusOr<TabularData> bad = ReadTabularCsv(path, Schema(), Categories());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("row 2, column 'amount': not a number"));
  EXPECT_THAT(FullMessage(bad.status()), HasSubstr(path + ":3: '1,000'"));

  const std::string good = WriteCsv("good.csv",
                                    "amount,merchant,\"hour\",fraud\n"
                                    "12.5,online,3,0\n"
                                    "1000,atm,23,1\r\n\n");
  StatusOr<TabularData> t = ReadTabularCsv(good, Schema(), Categories());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->features, ::testing::ElementsAre("amount", "merchant=atm", "merchant=online",
                                                  "merchant=shop", "hour"));
  EXPECT_EQ(t->rows(), 2);
  EXPECT_THAT(t->values, ::testing::ElementsAre(12.5, 0, 1, 0, 3, 1000, 1, 0, 0, 23));
  EXPECT_THAT(t->labels, ::testing::ElementsAre(0, 1));

  // Features chosen and ordered by the schema; the label may be absent for prediction.
  TabularSchema chosen = Schema();
  chosen.features = {"hour", "amount"};
  chosen.categorical = {};
  const std::string unlabelled = WriteCsv("unlabelled.csv", "amount,hour\n5,6\n");
  StatusOr<TabularData> u = ReadTabularCsv(unlabelled, chosen, {}, /*need_label=*/false);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_THAT(u->values, ::testing::ElementsAre(6, 5));
  EXPECT_TRUE(u->labels.empty());
}

// A vertical job's table: the id column is read as text, kept beside the
// rows (and through Subset), and is never a feature; a table without the
// label (a party that does not hold it) reads only when the label is not
// needed.
TEST(TabularTest, AnIdColumnIsKeptBesideTheRowsAndIsNeverAFeature) {
  const std::string path = WriteCsv("ids.csv",
                                    "amount,customer,merchant\n"
                                    "12.5,C-7,online\n"
                                    "3,\"C,8\",atm\n");
  TabularSchema schema;
  schema.id = "customer";
  schema.categorical = {"merchant"};
  StatusOr<TabularData> t = ReadTabularCsv(path, schema, Categories(), /*need_label=*/false);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->features,
              ::testing::ElementsAre("amount", "merchant=atm", "merchant=online", "merchant=shop"));
  EXPECT_THAT(t->ids, ::testing::ElementsAre("C-7", "C,8"));
  EXPECT_THAT(t->Subset({1}).ids, ::testing::ElementsAre("C,8"));
  EXPECT_TRUE(t->labels.empty());

  StatusOr<TabularData> needs_label = ReadTabularCsv(path, schema, Categories());
  EXPECT_THAT(needs_label.status().message(), HasSubstr("names no label column"));
  schema.features = {"amount", "customer"};
  schema.categorical = {};
  EXPECT_THAT(ReadTabularCsv(path, schema, {}, false).status().message(),
              HasSubstr("column 'customer' is both the id and a feature"));
  schema.features = {};
  schema.id = "client";
  EXPECT_THAT(ReadTabularCsv(path, schema, Categories(), false).status().message(),
              HasSubstr("id column 'client' is not in the file's header"));
  const std::string blank = WriteCsv("blank_id.csv", "amount,customer\n1,C-1\n2, \n");
  schema.id = "customer";
  StatusOr<TabularData> missing = ReadTabularCsv(blank, schema, {}, false);
  EXPECT_THAT(missing.status().message(), HasSubstr("row 2, column 'customer': the row has no id"));
}

// Each error names the row and column in a message that may leave the silo,
// and keeps the file, the line and the cell in its detail for the silo's log.
TEST(TabularTest, SchemaErrorsNameTheRowAndColumnAndKeepTheCellToTheSilo) {
  struct Case {
    std::string csv;
    TabularSchema schema;
    std::string shared;  // the message
    std::string detail;  // after the path, in the detail
    std::string secret;  // a value of the file, never in the message
  };
  TabularSchema extra = Schema();
  extra.features = {"amount", "merchant", "country"};
  TabularSchema no_vocab = Schema();
  no_vocab.categorical = {"merchant", "hour"};
  const std::vector<Case> cases = {
      {"amount,merchant,hour,label\n1,atm,2,0\n", Schema(),
       "label column 'fraud' is not in the file's header",
       ": columns: amount, merchant, hour, label", ""},
      {"amount,merchant,hour,fraud\n1,atm,2,0\n", extra,
       "feature column 'country' is not in the file's header", ": columns:", ""},
      {"amount,merchant,hour,fraud\n1,atm,2,0\n71.25,atm,2,0\nx9q,atm,2,0\n", Schema(),
       "row 3, column 'amount': not a number", ":4: 'x9q'", "x9q"},
      {"amount,merchant,hour,fraud\n1,bankofxyz,2,0\n", Schema(),
       "column 'merchant': a value outside the job's vocabulary "
       "(preprocess.categories.merchant)",
       ":2: 'bankofxyz' is not one of atm, online, shop", "bankofxyz"},
      {"amount,merchant,hour,fraud\n1,atm,2,yesno\n", Schema(),
       "row 1, column 'fraud': the label is not a class", ":2: 'yesno'", "yesno"},
      {"amount,merchant,hour,fraud\n1,atm,,0\n", Schema(), "row 1, column 'hour': missing value",
       ":2", ""},
      {"amount,merchant,hour,fraud\n1,atm,2\n", Schema(), "row 1: has 3 columns, the header has 4",
       ":2", ""},
      {"amount,merchant,hour,fraud\n1,atm,2,0\n", no_vocab,
       "categorical column 'hour' has no vocabulary", "", ""},
      {"amount,merchant,amount,fraud\n1,atm,2,0\n", Schema(), "column 'amount' appears twice", "",
       ""},
      {"", Schema(), "the file is empty", "", ""},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = WriteCsv(absl::StrCat("bad", i, ".csv"), cases[i].csv);
    StatusOr<TabularData> t = ReadTabularCsv(path, cases[i].schema, Categories());
    ASSERT_FALSE(t.ok()) << "case " << i;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(t.status().message());
    EXPECT_THAT(message, HasSubstr(cases[i].shared)) << "case " << i;
    EXPECT_TRUE(IsShareable(t.status())) << "case " << i;
    EXPECT_THAT(message, Not(HasSubstr(path))) << "case " << i;
    if (!cases[i].secret.empty()) {
      EXPECT_THAT(message, Not(HasSubstr(cases[i].secret)));
    }
    // The vocabulary is the job's: its refusal names no row.
    if (cases[i].shared.find("vocabulary") != std::string::npos) {
      EXPECT_THAT(message, Not(HasSubstr("row"))) << "case " << i;
    }
    EXPECT_THAT(PrivateDetail(t.status()), HasSubstr(path + cases[i].detail)) << "case " << i;
  }
  EXPECT_FALSE(ReadTabularCsv("/nonexistent/x.csv", Schema(), Categories()).ok());
}

TEST(TabularTest, MissingValuesAreDroppedOrImputedWithTheFederationsMean) {
  const std::string path = WriteCsv("missing.csv",
                                    "amount,merchant,hour,fraud\n"
                                    "2,atm,NA,0\n"
                                    "4,?,1,1\n"
                                    "6,shop,3,0\n");
  TabularSchema drop = Schema();
  drop.missing = MissingValues::kDrop;
  StatusOr<TabularData> dropped = ReadTabularCsv(path, drop, Categories());
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(dropped->rows(), 1);

  TabularSchema impute = Schema();
  impute.missing = MissingValues::kImpute;
  StatusOr<TabularData> t = ReadTabularCsv(path, impute, Categories());
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->rows(), 3);
  EXPECT_TRUE(std::isnan(t->row(0)[4]));
  EXPECT_THAT(std::vector<double>(t->row(1), t->row(1) + 4), ::testing::ElementsAre(4, 0, 0, 0));

  const FeatureSums sums = SumFeatures(*t);
  EXPECT_EQ(sums.count[4], 2);  // hour: two present values
  PreprocessConfig p = Categories();
  p.statistics = sums.Finish();
  EXPECT_DOUBLE_EQ(p.statistics.mean[4], 2.0);
  StatusOr<std::shared_ptr<Dataset>> d = PrepareTabular(*t, p, "silo 'a'");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FLOAT_EQ((*d)->example(0)[4], 2.0f);  // the mean, unscaled with scale: none
  EXPECT_EQ((*d)->num_classes, 2);
}

// Every marker of a missing cell, in any case, and only those: a 0 is a value.
TEST(TabularTest, EmptyNaNanNullAndQuestionMarkAreMissingInAnyCase) {
  TabularSchema impute = Schema();
  impute.missing = MissingValues::kImpute;
  for (const char* marker : {"", "NA", "na", "NaN", "nan", "null", "NULL", "?", " ? "}) {
    const std::string path =
        WriteCsv("marker.csv",
                 std::string("amount,merchant,hour,fraud\n2,atm,") + marker + ",0\n6,shop,3,0\n");
    StatusOr<TabularData> t = ReadTabularCsv(path, impute, Categories());
    ASSERT_TRUE(t.ok()) << "'" << marker << "': " << t.status();
    ASSERT_EQ(t->rows(), 2) << "'" << marker << "'";
    EXPECT_TRUE(std::isnan(t->row(0)[4])) << "'" << marker << "' is not missing";
    EXPECT_EQ(t->row(1)[4], 3) << "'" << marker << "'";
  }
  const std::string zero = WriteCsv("marker.csv", "amount,merchant,hour,fraud\n2,atm,0,0\n");
  StatusOr<TabularData> t = ReadTabularCsv(zero, impute, Categories());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->row(0)[4], 0);
}

// Three silos' files with shifted distributions; their sums, added, give the
// statistics of the union, and each silo standardised with them equals the
// union standardised centrally.
TEST(TabularTest, FederatedStandardisationEqualsCentralisedOnTheUnion) {
  std::mt19937_64 rng(7);
  std::vector<TabularData> silos;
  std::string union_csv = "amount,merchant,hour,fraud\n";
  const char* merchants[] = {"atm", "online", "shop"};
  for (int s = 0; s < 3; ++s) {
    std::normal_distribution<double> amount(50.0 * (s + 1), 10.0 + 5 * s);
    std::uniform_int_distribution<int> hour(0, 23), merchant(0, 2 - (s == 0));
    std::string csv = "amount,merchant,hour,fraud\n";
    for (int i = 0; i < 200 + 150 * s; ++i) {
      const std::string line = absl::StrCat(amount(rng), ",", merchants[merchant(rng)], ",",
                                            hour(rng), ",", i % (5 + s) == 0 ? 1 : 0, "\n");
      csv += line;
      union_csv += line;
    }
    StatusOr<TabularData> t =
        ReadTabularCsv(WriteCsv(absl::StrCat("silo", s, ".csv"), csv), Schema(), Categories());
    ASSERT_TRUE(t.ok()) << t.status();
    silos.push_back(*std::move(t));
  }
  StatusOr<TabularData> all =
      ReadTabularCsv(WriteCsv("union.csv", union_csv), Schema(), Categories());
  ASSERT_TRUE(all.ok()) << all.status();

  FeatureSums total = SumFeatures(silos[0]);
  for (int s = 1; s < 3; ++s) {
    // Sums travel as a model state.
    StatusOr<FeatureSums> received =
        FeatureSums::FromState(SumFeatures(silos[s]).ToState(), "silo");
    ASSERT_TRUE(received.ok()) << received.status();
    ASSERT_TRUE(total.Add(*received).ok());
  }
  PreprocessConfig p = Categories();
  p.scale = ScaleKind::kStandard;
  p.statistics = total.Finish();

  // Centrally, in two passes over the union.
  const size_t n = all->features.size();
  ASSERT_EQ(p.statistics.features, all->features);
  EXPECT_EQ(p.statistics.rows, all->rows());
  for (size_t j = 0; j < n; ++j) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < all->rows(); ++i) mean += all->row(i)[j];
    mean /= static_cast<double>(all->rows());
    for (int64_t i = 0; i < all->rows(); ++i) var += std::pow(all->row(i)[j] - mean, 2);
    const double sd = std::sqrt(var / static_cast<double>(all->rows()));
    EXPECT_NEAR(p.statistics.mean[j], mean, 1e-9 * (1 + std::abs(mean))) << all->features[j];
    EXPECT_NEAR(p.statistics.std[j], sd, 1e-9 * (1 + sd)) << all->features[j];
  }
  StatusOr<std::shared_ptr<Dataset>> central = PrepareTabular(*all, p, "union");
  ASSERT_TRUE(central.ok()) << central.status();
  int64_t offset = 0;
  for (const TabularData& silo : silos) {
    StatusOr<std::shared_ptr<Dataset>> local = PrepareTabular(silo, p, "silo");
    ASSERT_TRUE(local.ok()) << local.status();
    for (int64_t i = 0; i < silo.rows(); ++i) {
      for (size_t j = 0; j < n; ++j) {
        ASSERT_EQ((*local)->example(i)[j], (*central)->example(offset + i)[j]);
      }
    }
    offset += silo.rows();
  }
  // Standardised columns of the union have mean 0 and deviation 1.
  double m = 0;
  for (int64_t i = 0; i < all->rows(); ++i) m += (*central)->example(i)[0];
  EXPECT_NEAR(m / static_cast<double>(all->rows()), 0.0, 1e-5);

  // Min-max scaling maps the union into [0, 1].
  p.scale = ScaleKind::kMinMax;
  central = PrepareTabular(*all, p, "union");
  ASSERT_TRUE(central.ok());
  const auto [lo, hi] =
      std::minmax_element((*central)->features.begin(), (*central)->features.end());
  EXPECT_FLOAT_EQ(*lo, 0.0f);
  EXPECT_FLOAT_EQ(*hi, 1.0f);
}

TEST(TabularTest, SilosWithDifferentFeaturesAreNamed) {
  FeatureSums a = FeatureSums::For("fraud", {"amount", "hour"}, 2);
  FeatureSums b = FeatureSums::For("fraud", {"hour", "amount"}, 2);
  Status s = a.Add(b);
  EXPECT_THAT(s.message(), HasSubstr("feature 1 is 'hour', theirs is 'amount'"));
  FeatureSums c = FeatureSums::For("is_fraud", {"amount", "hour"}, 2);
  EXPECT_THAT(a.Add(c).message(), HasSubstr("label column 'is_fraud'"));

  PreprocessConfig p;
  p.statistics = a.Finish();
  TabularData t;
  t.label = "fraud";
  t.features = {"amount"};
  t.values = {1.0};
  t.labels = {0};
  EXPECT_THAT(PrepareTabular(t, p, "silo 'x'").status().message(),
              HasSubstr("silo 'x': features do not match the job's: feature 2 is '(none)', the "
                        "job's is 'hour'"));
  EXPECT_FALSE(FeatureSums::FromState(ModelState(), "silo 'x'").ok());
}

}  // namespace
}  // namespace fedsilo::ml
