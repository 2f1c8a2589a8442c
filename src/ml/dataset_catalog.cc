#include "ml/dataset_catalog.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "absl/strings/str_cat.h"
#include "ml/dataset_reader.h"

#ifndef FEDSILO_SOURCE_DATA_DIR
#define FEDSILO_SOURCE_DATA_DIR "data"
#endif

namespace fedsilo::ml {
namespace {

Dataset Subset(const Dataset& data, const std::vector<int64_t>& indices) {
  Dataset out;
  out.name = data.name;
  out.example_shape = data.example_shape;
  out.num_classes = data.num_classes;
  const int64_t f = data.feature_size();
  out.byte_scale = data.byte_scale;
  out.labels.reserve(indices.size());
  std::vector<uint8_t> bytes;
  for (int64_t i : indices) {
    if (data.has_byte_features()) {
      bytes.insert(bytes.end(), data.byte_example(i), data.byte_example(i) + f);
    } else {
      out.features.insert(out.features.end(), data.example(i), data.example(i) + f);
    }
    out.labels.push_back(data.labels[static_cast<size_t>(i)]);
  }
  if (data.has_byte_features()) out.byte_features = std::make_shared<ByteStore>(std::move(bytes));
  return out;
}

// Standardises every feature column with the mean and deviation of `train`.
void Standardize(Dataset& train, Dataset& test) {
  const int64_t f = train.feature_size();
  std::vector<double> mean(static_cast<size_t>(f), 0.0), sq(static_cast<size_t>(f), 0.0);
  for (int64_t i = 0; i < train.size(); ++i) {
    for (int64_t j = 0; j < f; ++j) mean[j] += train.example(i)[j];
  }
  for (double& m : mean) m /= static_cast<double>(train.size());
  for (int64_t i = 0; i < train.size(); ++i) {
    for (int64_t j = 0; j < f; ++j) sq[j] += std::pow(train.example(i)[j] - mean[j], 2);
  }
  for (Dataset* d : {&train, &test}) {
    for (int64_t i = 0; i < d->size(); ++i) {
      float* row = d->features.data() + i * f;
      for (int64_t j = 0; j < f; ++j) {
        const double sd = std::sqrt(sq[j] / static_cast<double>(train.size()));
        row[j] = static_cast<float>((row[j] - mean[j]) / (sd > 0 ? sd : 1.0));
      }
    }
  }
}

}  // namespace

std::string DefaultDataDir() {
  if (const char* env = std::getenv("FEDSILO_DATA"); env != nullptr && *env != '\0') return env;
  return FEDSILO_SOURCE_DATA_DIR;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> StratifiedIndices(
    const std::vector<int64_t>& labels, int num_classes, double test_fraction, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (size_t i = 0; i < labels.size(); ++i) {
    by_class[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
  }
  std::vector<int64_t> train, test;
  for (auto& members : by_class) {
    std::shuffle(members.begin(), members.end(), rng);
    const size_t n_test = static_cast<size_t>(std::llround(test_fraction * members.size()));
    test.insert(test.end(), members.begin(), members.begin() + n_test);
    train.insert(train.end(), members.begin() + n_test, members.end());
  }
  std::sort(train.begin(), train.end());
  std::sort(test.begin(), test.end());
  return {std::move(train), std::move(test)};
}

DatasetSplits StratifiedSplit(const Dataset& data, double test_fraction, uint64_t seed) {
  const auto [train, test] = StratifiedIndices(data.labels, data.num_classes, test_fraction, seed);
  return {std::make_shared<Dataset>(Subset(data, train)),
          std::make_shared<Dataset>(Subset(data, test))};
}

StatusOr<DatasetSplits> LoadBuiltinDataset(const std::string& name, const std::string& data_dir,
                                           double test_fraction, uint64_t seed) {
  if (name == "mnist") {
    const std::string dir = data_dir + "/mnist/";
    FEDSILO_ASSIGN_OR_RETURN(Dataset train, ReadIdxDataset(dir + "train-images-idx3-ubyte",
                                                           dir + "train-labels-idx1-ubyte", 10));
    FEDSILO_ASSIGN_OR_RETURN(Dataset test, ReadIdxDataset(dir + "t10k-images-idx3-ubyte",
                                                          dir + "t10k-labels-idx1-ubyte", 10));
    train.name = test.name = name;
    return DatasetSplits{std::make_shared<Dataset>(std::move(train)),
                         std::make_shared<Dataset>(std::move(test))};
  }
  if (name == "digits") {
    CsvOptions options;
    options.header = CsvHeader::kNone;
    options.num_classes = 10;
    options.example_shape = {1, 8, 8};
    FEDSILO_ASSIGN_OR_RETURN(Dataset all,
                             ReadCsvDataset(data_dir + "/sklearn/digits.csv.gz", options));
    for (float& v : all.features) v /= 16.0f;
    all.name = name;
    return StratifiedSplit(all, test_fraction, seed);
  }
  if (name == "breast_cancer") {
    CsvOptions options;
    options.header = CsvHeader::kSklearn;
    options.num_classes = 2;
    FEDSILO_ASSIGN_OR_RETURN(Dataset all,
                             ReadCsvDataset(data_dir + "/sklearn/breast_cancer.csv", options));
    all.name = name;
    DatasetSplits splits = StratifiedSplit(all, test_fraction, seed);
    auto train = std::make_shared<Dataset>(*splits.train);
    auto test = std::make_shared<Dataset>(*splits.test);
    Standardize(*train, *test);
    return DatasetSplits{train, test};
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown data set '", name, "'"));
}

}  // namespace fedsilo::ml
