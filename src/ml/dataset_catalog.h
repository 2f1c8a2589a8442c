// The built-in data sets jobs name ("mnist", "digits", "breast_cancer"): where
// their files live and how each is turned into a train / held-out test split.
#ifndef FEDSILO_ML_DATASET_CATALOG_H_
#define FEDSILO_ML_DATASET_CATALOG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "ml/dataset.h"

namespace fedsilo::ml {

// $FEDSILO_DATA if set, else the `data/` folder of the source tree that
// `scripts/setup` fills.
std::string DefaultDataDir();

// Loads a built-in data set from `data_dir`.
//  - mnist: the original 60 000 / 10 000 split; pixels scaled to [0, 1].
//  - digits: 8x8 images (values / 16), `test_fraction` held out, stratified.
//  - breast_cancer: 30 features standardised with the training part's mean and
//    standard deviation, `test_fraction` held out, stratified.
// NotFound (naming the file) when the data is missing.
StatusOr<DatasetSplits> LoadBuiltinDataset(const std::string& name, const std::string& data_dir,
                                           double test_fraction, uint64_t seed);

// Example indices of a stratified split (ascending): each class keeps about
// `test_fraction` of its examples in the second list. Deterministic in seed.
// REQUIRES: every label in [0, num_classes).
std::pair<std::vector<int64_t>, std::vector<int64_t>> StratifiedIndices(
    const std::vector<int64_t>& labels, int num_classes, double test_fraction, uint64_t seed);

// Splits `data` into train and test, stratified by label: each class keeps
// about `test_fraction` of its examples in the test part. Deterministic in seed.
DatasetSplits StratifiedSplit(const Dataset& data, double test_fraction, uint64_t seed);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_DATASET_CATALOG_H_
