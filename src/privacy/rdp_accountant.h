// Rényi differential privacy (RDP) accounting for the sampled Gaussian
// mechanism -- DP-SGD's noisy steps and DP-FedAvg's noisy rounds.
//
// RDP of one step follows Mironov, Talwar and Zhang, "Rényi Differential
// Privacy of the Sampled Gaussian Mechanism" (2019), Section 3.3: an exact sum
// for integer orders and a convergent series for fractional ones, both in log
// space. Steps compose by adding RDP per order. RDP is turned into (ε, δ) with
// the conversion of Balle et al., "Hypothesis Testing Interpretations and
// Rényi Differential Privacy" (AISTATS 2020, Theorem 21), which Opacus and
// Google's dp_accounting use today; the older conversion (Mironov 2017,
// Proposition 3) is available for comparing with published figures that used
// it. The default orders are the reference implementations' list:
// 1.1, 1.2, ..., 10.9, 12, 13, ..., 63.
//
// Thread safety: RdpAccountant is a value type; no shared state.
#ifndef FEDSILO_PRIVACY_RDP_ACCOUNTANT_H_
#define FEDSILO_PRIVACY_RDP_ACCOUNTANT_H_

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace fedsilo::privacy {

// The reference implementations' default orders (151 of them).
const std::vector<double>& DefaultOrders();

// RDP at `order` of one step of the sampled Gaussian mechanism with sampling
// rate `q` (Poisson) and noise multiplier `sigma` (noise standard deviation /
// L2 sensitivity). Infinite when sigma is 0; 0 when q is 0.
double SampledGaussianRdp(double q, double sigma, double order);

enum class Conversion {
  kBalle2020,    // ε = rdp + log((α-1)/α) - (log δ + log α) / (α-1); the default
  kMironov2017,  // ε = rdp - log δ / (α-1)
};

struct PrivacySpent {
  double epsilon = 0;
  double order = 0;  // the order that gave the smallest ε
};

class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = DefaultOrders());

  // Adds `steps` steps with sampling rate q and noise multiplier sigma.
  // InvalidArgument unless 0 <= q <= 1, sigma >= 0, steps >= 0.
  Status Compose(double q, double sigma, int64_t steps);

  // The smallest ε over the orders at `delta`. InvalidArgument unless
  // 0 < delta < 1. ε is infinite when nothing bounds it (sigma 0).
  StatusOr<PrivacySpent> Spent(double delta, Conversion conversion = Conversion::kBalle2020) const;

  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
};

// ε after `steps` steps at (q, sigma), at `delta`.
StatusOr<PrivacySpent> ComputeEpsilon(double q, double sigma, int64_t steps, double delta,
                                      Conversion conversion = Conversion::kBalle2020);

// The smallest noise multiplier (found by bisection to within ε tolerance
// `epsilon_tolerance`, as Opacus does) whose ε after `steps` steps at rate q
// is at most `target_epsilon`. InvalidArgument for impossible inputs or a
// target that needs a noise multiplier above 1e6.
StatusOr<double> ComputeNoiseMultiplier(double target_epsilon, double q, int64_t steps,
                                        double delta, double epsilon_tolerance = 0.01);

}  // namespace fedsilo::privacy

#endif  // FEDSILO_PRIVACY_RDP_ACCOUNTANT_H_
