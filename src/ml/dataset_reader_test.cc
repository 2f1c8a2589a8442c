#include "ml/dataset_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "ml/dataset_catalog.h"

namespace fedsilo::ml {
namespace {

using ::testing::HasSubstr;

std::string Dir() {
  const std::string dir = ::testing::TempDir() + "/reader_test";
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Idx(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& values) {
  std::string s = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8)
      s.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  s.append(values.begin(), values.end());
  return s;
}

TEST(IdxReaderTest, ReadsImagesAndLabels) {
  const std::string dir = Dir();
  std::vector<uint8_t> pixels(3 * 2 * 2);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 20);
  WriteBytes(dir + "/img", Idx({3, 2, 2}, pixels));
  WriteBytes(dir + "/lbl", Idx({3}, {2, 0, 9}));
  StatusOr<Dataset> d = ReadIdxDataset(dir + "/img", dir + "/lbl", 10);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 3);
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{2, 0, 9}));
  float row[4];
  d->CopyExample(1, row);
  EXPECT_FLOAT_EQ(row[0], 80.0f / 255.0f);
  EXPECT_FLOAT_EQ(row[3], 140.0f / 255.0f);
  // The file is mapped, not copied: it is among this process's mappings
  // while the data set lives.
  std::stringstream maps;
  maps << std::ifstream("/proc/self/maps").rdbuf();
  EXPECT_THAT(maps.str(), HasSubstr(std::filesystem::canonical(dir + "/img").string()));
}

TEST(IdxReaderTest, ReadsGzippedFiles) {
  const std::string path = Dir() + "/lbl.gz";
  const std::string raw = Idx({4}, {1, 2, 3, 4});
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, raw.data(), static_cast<unsigned>(raw.size()));
  gzclose(f);
  StatusOr<IdxArray> a = ReadIdx(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(std::vector<uint8_t>(a->values(), a->values() + a->size()),
            (std::vector<uint8_t>{1, 2, 3, 4}));
}

TEST(IdxReaderTest, BadFilesAreClearErrorsNamingTheFile) {
  const std::string dir = Dir();
  WriteBytes(dir + "/short", Idx({10}, {1, 2, 3}));
  StatusOr<IdxArray> shorter = ReadIdx(dir + "/short");
  EXPECT_EQ(shorter.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(shorter.status().message(), HasSubstr(dir + "/short: IDX header announces 10"));

  WriteBytes(dir + "/text", "hello world");
  EXPECT_THAT(ReadIdx(dir + "/text").status().message(), HasSubstr("not an IDX file"));

  StatusOr<IdxArray> missing = ReadIdx(dir + "/missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("scripts/setup"));

  WriteBytes(dir + "/img", Idx({2, 1, 1}, {0, 0}));
  WriteBytes(dir + "/lbl3", Idx({3}, {0, 0, 0}));
  EXPECT_THAT(ReadIdxDataset(dir + "/img", dir + "/lbl3", 10).status().message(),
              HasSubstr("holds 2 images but"));
  WriteBytes(dir + "/lbl2", Idx({2}, {0, 12}));
  EXPECT_THAT(ReadIdxDataset(dir + "/img", dir + "/lbl2", 10).status().message(),
              HasSubstr("label 12 at index 1"));
}

TEST(CsvReaderTest, ReadsScikitLearnHeaderAndLabelColumn) {
  const std::string path = Dir() + "/bc.csv";
  WriteBytes(path, "3,2,malignant,benign\n1.5,2,0\n-3,4e1,1\n0,0,1\n");
  CsvOptions o;
  o.header = CsvHeader::kSklearn;
  StatusOr<Dataset> d = ReadCsvDataset(path, o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 3);
  EXPECT_EQ(d->num_classes, 2);
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(d->features, (std::vector<float>{1.5f, 2, -3, 40, 0, 0}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{0, 1, 1}));

  o.label_column = 0;
  o.header = CsvHeader::kNames;
  WriteBytes(path, "label,a,b\n1,5,6\n0,7,8\n");
  StatusOr<Dataset> first = ReadCsvDataset(path, o);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->labels, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(first->features, (std::vector<float>{5, 6, 7, 8}));
}

TEST(CsvReaderTest, BadRowsNameFileAndLine) {
  const std::string path = Dir() + "/bad.csv";
  CsvOptions o;
  WriteBytes(path, "1,2,0\n3,x,1\n");
  EXPECT_THAT(ReadCsvDataset(path, o).status().message(),
              HasSubstr("bad.csv:2: column 2: 'x' is not a finite number"));
  WriteBytes(path, "1,2,0\n3,1\n");
  EXPECT_THAT(ReadCsvDataset(path, o).status().message(), HasSubstr("bad.csv:2: has 2 columns"));
  WriteBytes(path, "1,2,0.5\n");
  EXPECT_THAT(ReadCsvDataset(path, o).status().message(),
              HasSubstr("label '0.5' is not a non-negative integer"));
  o.header = CsvHeader::kSklearn;
  WriteBytes(path, "5,2,a,b\n1,2,0\n");
  StatusOr<Dataset> wrong_count = ReadCsvDataset(path, o);
  EXPECT_EQ(wrong_count.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(wrong_count.status().message(), HasSubstr("header announces 5 rows"));
}

TEST(CatalogTest, MissingDataNamesTheFileAndTheFix) {
  StatusOr<DatasetSplits> d = LoadBuiltinDataset("digits", "/nonexistent", 0.2, 1);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(d.status().message(), HasSubstr("/nonexistent/sklearn/digits.csv.gz"));
  EXPECT_THAT(d.status().message(), HasSubstr("scripts/setup"));
}

TEST(CatalogTest, StratifiedSplitKeepsClassShares) {
  Dataset d;
  d.example_shape = {1};
  d.num_classes = 2;
  for (int i = 0; i < 100; ++i) {
    d.features.push_back(static_cast<float>(i));
    d.labels.push_back(i < 80 ? 0 : 1);
  }
  DatasetSplits s = StratifiedSplit(d, 0.25, 3);
  EXPECT_EQ(s.test->size(), 25);
  EXPECT_EQ(s.train->size(), 75);
  EXPECT_EQ(std::count(s.test->labels.begin(), s.test->labels.end(), 1), 5);
  // Every example lands in exactly one part.
  std::vector<float> all = s.train->features;
  all.insert(all.end(), s.test->features.begin(), s.test->features.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, d.features);
}

// The real files fetched by scripts/setup, when present.
TEST(CatalogTest, LoadsTheRealSmallDataSets) {
  const std::string dir = DefaultDataDir();
  if (!std::filesystem::exists(dir + "/sklearn/digits.csv.gz")) {
    GTEST_SKIP() << "data sets not fetched into " << dir << " (run scripts/setup)";
  }
  StatusOr<DatasetSplits> digits = LoadBuiltinDataset("digits", dir, 0.2, 1);
  ASSERT_TRUE(digits.ok()) << digits.status();
  EXPECT_EQ(digits->train->size() + digits->test->size(), 1797);
  EXPECT_EQ(digits->train->example_shape, (std::vector<int64_t>{1, 8, 8}));
  StatusOr<DatasetSplits> bc = LoadBuiltinDataset("breast_cancer", dir, 0.2, 1);
  ASSERT_TRUE(bc.ok()) << bc.status();
  EXPECT_EQ(bc->train->size() + bc->test->size(), 569);
  EXPECT_EQ(bc->train->num_classes, 2);
  // Standardised with the training part's statistics: mean ~0 there.
  double mean = 0;
  for (int64_t i = 0; i < bc->train->size(); ++i) mean += bc->train->example(i)[0];
  EXPECT_NEAR(mean / bc->train->size(), 0.0, 1e-4);
}

}  // namespace
}  // namespace fedsilo::ml
