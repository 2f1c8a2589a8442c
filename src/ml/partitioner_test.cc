#include "ml/partitioner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace fedsilo::ml {
namespace {

// 10 classes x 100 examples, sorted by class.
std::vector<int64_t> Labels() {
  std::vector<int64_t> labels;
  for (int c = 0; c < 10; ++c) labels.insert(labels.end(), 100, c);
  return labels;
}

void ExpectDisjointCover(const std::vector<std::vector<int64_t>>& parts, size_t n) {
  std::vector<int64_t> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all.size(), n);
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "an example is in two silos";
}

int DistinctLabels(const std::vector<int64_t>& part, const std::vector<int64_t>& labels) {
  std::set<int64_t> s;
  for (int64_t i : part) s.insert(labels[i]);
  return static_cast<int>(s.size());
}

// Mean over silos of the largest class's share of the silo's examples.
double MeanMajorityShare(const std::vector<std::vector<int64_t>>& parts,
                         const std::vector<int64_t>& labels) {
  double total = 0;
  for (const auto& p : parts) {
    std::vector<int> counts(10, 0);
    for (int64_t i : p) ++counts[labels[i]];
    total += static_cast<double>(*std::max_element(counts.begin(), counts.end())) / p.size();
  }
  return total / parts.size();
}

TEST(PartitionerTest, IidGivesEqualMixedParts) {
  const auto labels = Labels();
  auto parts = PartitionIndices(labels, 10, 7, {PartitionScheme::kIid, 0, 0, 5});
  ASSERT_TRUE(parts.ok());
  ExpectDisjointCover(*parts, labels.size());
  for (const auto& p : *parts) {
    EXPECT_TRUE(p.size() == 142 || p.size() == 143) << p.size();
    EXPECT_GE(DistinctLabels(p, labels), 8);
  }
}

TEST(PartitionerTest, SameSeedSamePartsOtherSeedOtherParts) {
  const auto labels = Labels();
  for (PartitionScheme scheme :
       {PartitionScheme::kIid, PartitionScheme::kDirichlet, PartitionScheme::kShards}) {
    auto a = PartitionIndices(labels, 10, 5, {scheme, 0.5, 2, 11});
    auto b = PartitionIndices(labels, 10, 5, {scheme, 0.5, 2, 11});
    auto c = PartitionIndices(labels, 10, 5, {scheme, 0.5, 2, 12});
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(*a, *b) << PartitionSchemeName(scheme);
    EXPECT_NE(*a, *c) << PartitionSchemeName(scheme);
  }
}

TEST(PartitionerTest, DirichletSkewFollowsAlpha) {
  const auto labels = Labels();
  auto skewed = PartitionIndices(labels, 10, 10, {PartitionScheme::kDirichlet, 0.1, 0, 1});
  auto mixed = PartitionIndices(labels, 10, 10, {PartitionScheme::kDirichlet, 100, 0, 1});
  ASSERT_TRUE(skewed.ok() && mixed.ok());
  ExpectDisjointCover(*skewed, labels.size());
  ExpectDisjointCover(*mixed, labels.size());
  for (const auto& p : *skewed) EXPECT_GE(p.size(), 10u);  // minimum size is enforced
  auto middle = PartitionIndices(labels, 10, 10, {PartitionScheme::kDirichlet, 1.0, 0, 1});
  ASSERT_TRUE(middle.ok());
  // IID shares would give about 0.13; one class per silo would give 1.
  EXPECT_GT(MeanMajorityShare(*skewed, labels), 0.35);
  EXPECT_GT(MeanMajorityShare(*skewed, labels), MeanMajorityShare(*middle, labels));
  EXPECT_GT(MeanMajorityShare(*middle, labels), MeanMajorityShare(*mixed, labels));
  EXPECT_LT(MeanMajorityShare(*mixed, labels), 0.2);
}

TEST(PartitionerTest, ShardsGiveEachSiloFewClasses) {
  const auto labels = Labels();
  auto parts = PartitionIndices(labels, 10, 10, {PartitionScheme::kShards, 0, 2, 3});
  ASSERT_TRUE(parts.ok());
  ExpectDisjointCover(*parts, labels.size());
  for (const auto& p : *parts) {
    EXPECT_EQ(p.size(), 100u);
    EXPECT_LE(DistinctLabels(p, labels), 2);
  }
}

TEST(PartitionerTest, TooFewExamplesIsAnError) {
  std::vector<int64_t> labels = {0, 1, 0};
  EXPECT_THAT(PartitionIndices(labels, 2, 4, {}).status().message(),
              ::testing::HasSubstr("cannot split 3 examples across 4 silos"));
  EXPECT_THAT(
      PartitionIndices(labels, 2, 2, {PartitionScheme::kShards, 0, 2, 0}).status().message(),
      ::testing::HasSubstr("shards_per_silo"));
}

TEST(PartitionerTest, SilosKeepALocalTestSplit) {
  auto data = std::make_shared<Dataset>();
  data->example_shape = {1};
  data->num_classes = 10;
  data->labels = Labels();
  data->features.assign(data->labels.size(), 0.0f);
  auto silos = PartitionForSilos(data, 4, {PartitionScheme::kIid, 0, 0, 9}, 0.2);
  ASSERT_TRUE(silos.ok());
  std::vector<std::vector<int64_t>> all;
  for (const SiloData& s : *silos) {
    EXPECT_EQ(s.test.size(), 50);
    EXPECT_EQ(s.train.size(), 200);
    all.push_back(s.train.indices);
    all.push_back(s.test.indices);
  }
  ExpectDisjointCover(all, 1000);
}

}  // namespace
}  // namespace fedsilo::ml
