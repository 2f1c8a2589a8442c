#include "privacy/central_dp.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "privacy/rdp_accountant.h"

namespace fedsilo::privacy {

CentralDp::CentralDp(const DpConfig& config, int expected_silos, double sample_rate)
    : config_(config),
      expected_silos_(std::max(1, expected_silos)),
      sample_rate_(sample_rate),
      clip_norm_(config.clip_norm) {
  const double z = config.noise_multiplier;
  count_stddev_ = config.adaptive_clipping ? expected_silos_ / 20.0 : 0;
  update_noise_multiplier_ = z;
  if (config.adaptive_clipping && z > 0) {
    // Andrew et al. 2021, Section 3: split the privacy cost between the
    // update noise and the clipped-count noise.
    const double rest = std::pow(z, -2) - std::pow(2 * count_stddev_, -2);
    feasible_ = rest > 0;
    update_noise_multiplier_ = feasible_ ? std::pow(rest, -0.5) : z;
  }
}

Status CentralDp::Check() const {
  if (feasible_) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "privacy.dp.adaptive_clipping: noise_multiplier ", config_.noise_multiplier,
      " cannot be split between the updates and the noisy clipped-count with ", expected_silos_,
      " silos per round: it must be below 2 x silos / 20 = ", 2 * count_stddev_,
      "; sample more silos per round, or turn adaptive_clipping off"));
}

void CentralDp::BeginRound() {
  unclipped_ = 0;
  counted_ = 0;
}

double CentralDp::Clip(ModelState& update) {
  const double norm = ClipL2Norm(update, clip_norm_);
  ++counted_;
  if (norm <= clip_norm_) ++unclipped_;
  return norm;
}

void CentralDp::Noise(ModelState& delta_mean, int num_updates) {
  const double stddev = update_noise_multiplier_ * clip_norm_ / std::max(1, num_updates);
  for (Tensor& t : delta_mean.mutable_tensors()) {
    for (float& v : t.floats()) v += static_cast<float>(random_.Gaussian() * stddev);
  }
  if (config_.adaptive_clipping && counted_ > 0) {
    const double b = (unclipped_ + random_.Gaussian() * count_stddev_) / expected_silos_;
    clip_norm_ *= std::exp(-config_.clip_learning_rate * (b - config_.target_quantile));
  }
}

StatusOr<double> CentralDp::Epsilon(int rounds) const {
  // Each round is one sampled Gaussian step over silos. With adaptive
  // clipping the count query is a second Gaussian mechanism, which the
  // reduced update noise pays for (the two compose to noise multiplier z).
  FEDSILO_ASSIGN_OR_RETURN(
      PrivacySpent spent,
      ComputeEpsilon(sample_rate_, config_.noise_multiplier, rounds, config_.delta));
  return spent.epsilon;
}

}  // namespace fedsilo::privacy
