// Splits a training set across silos, the way federated learning papers
// simulate data that lives in separate places. Deterministic in the seed.
#ifndef FEDSILO_ML_PARTITIONER_H_
#define FEDSILO_ML_PARTITIONER_H_

#include <cstdint>
#include <vector>

#include "core/job_config.h"
#include "core/status.h"
#include "ml/dataset.h"

namespace fedsilo::ml {

struct PartitionOptions {
  PartitionScheme scheme = PartitionScheme::kIid;
  double alpha = 0.5;       // kDirichlet: smaller = more skewed label mixes
  int shards_per_silo = 2;  // kShards
  uint64_t seed = 0;

  // The split a job asks for (data.partition, alpha, shards_per_silo, seed).
  // Simulation and silo processes both use it, so they cut the same shares.
  static PartitionOptions ForJob(const JobConfig& job);
};

// Returns one list of example indices per silo; together they cover every
// example at most once.
//  - kIid: a random permutation cut into near-equal parts.
//  - kDirichlet: for each class, its examples are divided among silos in
//    proportions drawn from Dirichlet(alpha); redrawn (up to 100 times) until
//    every silo has at least min(10, n / (2 * silos)) examples.
//  - kShards: examples sorted by label, cut into silos * shards_per_silo equal
//    shards, each silo given shards_per_silo random ones (McMahan et al. 2017).
// InvalidArgument if there are fewer examples than silos (or shards).
StatusOr<std::vector<std::vector<int64_t>>> PartitionIndices(const std::vector<int64_t>& labels,
                                                             int num_classes, int num_silos,
                                                             const PartitionOptions& options);

// A silo's data: its training part and its local test part.
struct SiloData {
  DataView train;
  DataView test;
};

// Partitions `train` across `num_silos` and keeps `silo_test_fraction` of each
// part (at least one example stays for training) as that silo's local test set.
StatusOr<std::vector<SiloData>> PartitionForSilos(std::shared_ptr<const Dataset> train,
                                                  int num_silos, const PartitionOptions& options,
                                                  double silo_test_fraction);

}  // namespace fedsilo::ml

#endif  // FEDSILO_ML_PARTITIONER_H_
