// Central differential privacy for federated averaging (DP-FedAvg, McMahan et
// al., "Learning Differentially Private Recurrent Language Models", ICLR
// 2018): each silo's update is clipped to L2 norm S before aggregation, the
// clipped updates are averaged with equal weights, and Gaussian noise of
// standard deviation z S / m is added to the mean of m updates. This protects
// each *silo* (its whole update), with the orchestrator trusted to add the
// noise. Optionally S follows a quantile of the update norms (Andrew et al.,
// "Differentially Private Learning with Adaptive Clipping", NeurIPS 2021):
// each round S <- S exp(-eta (b - gamma)), b the noised share of updates that
// were not clipped; the count's noise costs privacy, so the update noise
// multiplier becomes (z^-2 - (2 sigma_b)^-2)^(-1/2).
//
// Thread safety: one CentralDp per run, used from the orchestrator's thread.
#ifndef FEDSILO_PRIVACY_CENTRAL_DP_H_
#define FEDSILO_PRIVACY_CENTRAL_DP_H_

#include <cstdint>

#include "core/job_config.h"
#include "core/model_state.h"
#include "core/status.h"
#include "privacy/secure_random.h"

namespace fedsilo::privacy {

class CentralDp {
 public:
  // REQUIRES: config.mode == DpMode::kCentral (checked by ParseJobConfig).
  // `expected_silos`: silos sampled per round. Noise comes from a CSPRNG
  // keyed from the operating system: silos must not be able to predict it.
  CentralDp(const DpConfig& config, int expected_silos, double sample_rate);

  // InvalidArgument naming the keys when adaptive clipping cannot pay for its
  // count noise (z must be below 2 sigma_b = expected silos / 10).
  Status Check() const;

  // Starts a round: clears the clipped count.
  void BeginRound();
  // Scales `update` down to norm S when it is longer and counts whether it
  // was clipped. Returns its norm before clipping.
  double Clip(ModelState& update);
  // Counts updates clipped elsewhere (by silos, under secure aggregation):
  // `within` of `counted` were no longer than S.
  void CountClipped(int within, int counted) {
    unclipped_ += within;
    counted_ += counted;
  }
  // Adds the noise of the round's mean of `num_updates` clipped updates to
  // `delta_mean` (the mean applied to the global model, before any server
  // learning rate), then adapts S when asked to.
  void Noise(ModelState& delta_mean, int num_updates);

  double clip_norm() const { return clip_norm_; }
  // The noise multiplier the updates get (a little above z with adaptive
  // clipping, which must also pay for the noisy count).
  double update_noise_multiplier() const { return update_noise_multiplier_; }
  // Silo-level epsilon after `rounds` rounds at delta.
  StatusOr<double> Epsilon(int rounds) const;

 private:
  DpConfig config_;
  int expected_silos_;
  double sample_rate_;
  double clip_norm_;
  double update_noise_multiplier_;
  double count_stddev_;
  bool feasible_ = true;
  int unclipped_ = 0;
  int counted_ = 0;
  SecureRandom random_;  // keyed from the operating system
};

}  // namespace fedsilo::privacy

#endif  // FEDSILO_PRIVACY_CENTRAL_DP_H_
