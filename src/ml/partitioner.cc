#include "ml/partitioner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"

namespace fedsilo::ml {
namespace {

using Parts = std::vector<std::vector<int64_t>>;

Parts Iid(int64_t n, int num_silos, std::mt19937_64& rng) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  Parts parts(static_cast<size_t>(num_silos));
  for (int s = 0; s < num_silos; ++s) {
    const int64_t begin = n * s / num_silos, end = n * (s + 1) / num_silos;
    parts[s].assign(order.begin() + begin, order.begin() + end);
  }
  return parts;
}

Parts Dirichlet(const std::vector<int64_t>& labels, int num_classes, int num_silos, double alpha,
                std::mt19937_64& rng) {
  const int64_t n = static_cast<int64_t>(labels.size());
  const int64_t min_size = std::max<int64_t>(1, std::min<int64_t>(10, n / (2 * num_silos)));
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (int64_t i = 0; i < n; ++i) by_class[labels[i]].push_back(i);
  Parts parts;
  for (int attempt = 0; attempt < 100; ++attempt) {
    parts.assign(static_cast<size_t>(num_silos), {});
    for (auto& members : by_class) {
      std::shuffle(members.begin(), members.end(), rng);
      std::gamma_distribution<double> gamma(alpha, 1.0);
      std::vector<double> p(static_cast<size_t>(num_silos));
      double total = 0;
      for (double& v : p) total += (v = gamma(rng));
      if (total <= 0) {  // every draw underflowed (tiny alpha): give the class to one silo
        std::fill(p.begin(), p.end(), 0.0);
        p[std::uniform_int_distribution<int>(0, num_silos - 1)(rng)] = total = 1.0;
      }
      double cumulative = 0;
      size_t begin = 0;
      for (int s = 0; s < num_silos; ++s) {
        cumulative += p[s] / total;
        const size_t end =
            s + 1 == num_silos
                ? members.size()
                : std::min(members.size(),
                           static_cast<size_t>(std::llround(cumulative * members.size())));
        parts[s].insert(parts[s].end(), members.begin() + begin, members.begin() + end);
        begin = end;  // cumulative shares only grow, so end >= begin
      }
    }
    const size_t smallest =
        std::min_element(parts.begin(), parts.end(), [](const auto& a, const auto& b) {
          return a.size() < b.size();
        })->size();
    if (static_cast<int64_t>(smallest) >= min_size) break;
  }
  for (auto& part : parts) std::shuffle(part.begin(), part.end(), rng);
  return parts;
}

Parts Shards(const std::vector<int64_t>& labels, int num_silos, int shards_per_silo,
             std::mt19937_64& rng) {
  const int64_t n = static_cast<int64_t>(labels.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return labels[a] < labels[b]; });
  const int64_t num_shards = static_cast<int64_t>(num_silos) * shards_per_silo;
  std::vector<int64_t> shard_ids(static_cast<size_t>(num_shards));
  std::iota(shard_ids.begin(), shard_ids.end(), 0);
  std::shuffle(shard_ids.begin(), shard_ids.end(), rng);
  Parts parts(static_cast<size_t>(num_silos));
  for (int64_t k = 0; k < num_shards; ++k) {
    const int64_t shard = shard_ids[k];
    const int64_t begin = n * shard / num_shards, end = n * (shard + 1) / num_shards;
    auto& part = parts[k / shards_per_silo];
    part.insert(part.end(), order.begin() + begin, order.begin() + end);
  }
  for (auto& part : parts) std::shuffle(part.begin(), part.end(), rng);
  return parts;
}

}  // namespace

PartitionOptions PartitionOptions::ForJob(const JobConfig& job) {
  return {job.data.partition, job.data.alpha, job.data.shards_per_silo, job.seed};
}

StatusOr<std::vector<std::vector<int64_t>>> PartitionIndices(const std::vector<int64_t>& labels,
                                                             int num_classes, int num_silos,
                                                             const PartitionOptions& options) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (num_silos < 1) return absl::InvalidArgumentError("need at least one silo");
  if (n < num_silos) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot split ", n, " examples across ", num_silos, " silos"));
  }
  std::mt19937_64 rng(options.seed);
  switch (options.scheme) {
    case PartitionScheme::kIid:
      return Iid(n, num_silos, rng);
    case PartitionScheme::kDirichlet:
      return Dirichlet(labels, num_classes, num_silos, options.alpha, rng);
    case PartitionScheme::kShards:
      if (n < static_cast<int64_t>(num_silos) * options.shards_per_silo) {
        return absl::InvalidArgumentError(
            absl::StrCat("data.shards_per_silo: cannot cut ", n, " examples into ",
                         num_silos * options.shards_per_silo, " shards"));
      }
      return Shards(labels, num_silos, options.shards_per_silo, rng);
  }
  return absl::InvalidArgumentError("unknown partition scheme");
}

StatusOr<std::vector<SiloData>> PartitionForSilos(std::shared_ptr<const Dataset> train,
                                                  int num_silos, const PartitionOptions& options,
                                                  double silo_test_fraction) {
  FEDSILO_ASSIGN_OR_RETURN(auto parts,
                           PartitionIndices(train->labels, train->num_classes, num_silos, options));
  std::vector<SiloData> silos;
  silos.reserve(parts.size());
  for (size_t k = 0; k < parts.size(); ++k) {
    auto& part = parts[k];
    if (part.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "silo ", k + 1, " of ", num_silos, " received no examples; use fewer silos",
          options.scheme == PartitionScheme::kDirichlet ? " or a larger data.alpha" : ""));
    }
    // Parts are already shuffled: the first examples become the local test set.
    const size_t n_test = std::min(
        part.size() - 1, static_cast<size_t>(std::llround(silo_test_fraction * part.size())));
    SiloData s;
    s.test.dataset = s.train.dataset = train;
    s.test.indices.assign(part.begin(), part.begin() + n_test);
    s.train.indices.assign(part.begin() + n_test, part.end());
    silos.push_back(std::move(s));
  }
  return silos;
}

}  // namespace fedsilo::ml
