#include "privacy/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fedsilo::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(x) + exp(y)) without overflow; -inf stands for 0.
double LogAdd(double x, double y) {
  const double a = std::min(x, y), b = std::max(x, y);
  if (a == -kInf) return b;
  return std::log1p(std::exp(a - b)) + b;
}

// log(exp(x) - exp(y)) for x >= y.
double LogSub(double x, double y) {
  if (y == -kInf) return x;
  if (x <= y) return -kInf;
  const double d = std::expm1(x - y);
  if (!std::isfinite(d)) return x;
  return std::log(d) + y;
}

// log(erfc(x)), accurate where erfc underflows (large x).
double LogErfc(double x) {
  if (x < 25.0) return std::log(std::erfc(x));
  // erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6))
  const double x2 = x * x;
  const double series = 1.0 - 1.0 / (2 * x2) + 3.0 / (4 * x2 * x2) - 15.0 / (8 * x2 * x2 * x2);
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) + std::log(series);
}

// log |Gamma(x)|. Not std::lgamma: it also writes the global `signgam`, a
// data race when silos plan their privacy on several threads at once.
double LogGamma(double x) {
  int sign = 1;
  return lgamma_r(x, &sign);
}

// log |C(alpha, i)| of the generalised binomial coefficient, and whether it
// is negative (alpha > 0, so only Gamma(alpha - i + 1) can be negative).
double LogAbsBinomial(double alpha, double i, bool* negative) {
  int sign = 1;
  const double log_den = lgamma_r(alpha - i + 1, &sign);
  *negative = sign < 0;
  return LogGamma(alpha + 1) - LogGamma(i + 1) - log_den;
}

// log(A_alpha) for integer alpha: the exact binomial sum.
double LogAInt(double q, double sigma, int alpha) {
  double log_a = -kInf;
  const double log_q = std::log(q), log_1q = std::log1p(-q);
  for (int i = 0; i <= alpha; ++i) {
    const double log_binom =
        LogGamma(alpha + 1.0) - LogGamma(i + 1.0) - LogGamma(alpha - i + 1.0);
    const double s = log_binom + i * log_q + (alpha - i) * log_1q +
                     (static_cast<double>(i) * i - i) / (2 * sigma * sigma);
    log_a = LogAdd(log_a, s);
  }
  return log_a;
}

// log(A_alpha) for fractional alpha: the two half-line integrals as series,
// summed until their terms fall below exp(-30).
double LogAFrac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double log_q = std::log(q), log_1q = std::log1p(-q);
  for (int i = 0; i < 100000; ++i) {
    bool negative = false;
    const double log_coef = LogAbsBinomial(alpha, i, &negative);
    const double j = alpha - i;
    const double log_t0 = log_coef + i * log_q + j * log_1q;
    const double log_t1 = log_coef + j * log_q + i * log_1q;
    const double log_e0 = std::log(0.5) + LogErfc((i - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (static_cast<double>(i) * i - i) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (!negative) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30) break;
  }
  return LogAdd(log_a0, log_a1);
}

}  // namespace

const std::vector<double>& DefaultOrders() {
  static const std::vector<double>* orders = [] {
    auto* o = new std::vector<double>();
    for (int x = 1; x < 100; ++x) o->push_back(1 + x / 10.0);
    for (int a = 12; a < 64; ++a) o->push_back(a);
    return o;
  }();
  return *orders;
}

double SampledGaussianRdp(double q, double sigma, double order) {
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (q == 1.0) return order / (2 * sigma * sigma);
  if (std::isinf(order)) return kInf;
  const double log_a = order == std::floor(order) ? LogAInt(q, sigma, static_cast<int>(order))
                                                  : LogAFrac(q, sigma, order);
  return log_a / (order - 1);
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

Status RdpAccountant::Compose(double q, double sigma, int64_t steps) {
  if (!(q >= 0 && q <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("sample rate ", q, " is not in [0, 1]"));
  }
  if (!(sigma >= 0) || !std::isfinite(sigma)) {
    return absl::InvalidArgumentError(absl::StrCat("noise multiplier ", sigma, " is not >= 0"));
  }
  if (steps < 0) return absl::InvalidArgumentError(absl::StrCat("steps ", steps, " is negative"));
  if (steps == 0 || q == 0) return absl::OkStatus();
  for (size_t i = 0; i < orders_.size(); ++i) {
    rdp_[i] += static_cast<double>(steps) * SampledGaussianRdp(q, sigma, orders_[i]);
  }
  return absl::OkStatus();
}

StatusOr<PrivacySpent> RdpAccountant::Spent(double delta, Conversion conversion) const {
  if (!(delta > 0 && delta < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("delta ", delta, " is not in (0, 1)"));
  }
  PrivacySpent best{kInf, 0};
  for (size_t i = 0; i < orders_.size(); ++i) {
    const double a = orders_[i];
    if (a <= 1) continue;
    const double eps =
        conversion == Conversion::kBalle2020
            ? rdp_[i] - (std::log(delta) + std::log(a)) / (a - 1) + std::log((a - 1) / a)
            : rdp_[i] - std::log(delta) / (a - 1);
    if (!std::isnan(eps) && eps < best.epsilon) best = {eps, a};
  }
  best.epsilon = std::max(best.epsilon, 0.0);
  return best;
}

StatusOr<PrivacySpent> ComputeEpsilon(double q, double sigma, int64_t steps, double delta,
                                      Conversion conversion) {
  RdpAccountant accountant;
  FEDSILO_RETURN_IF_ERROR(accountant.Compose(q, sigma, steps));
  return accountant.Spent(delta, conversion);
}

StatusOr<double> ComputeNoiseMultiplier(double target_epsilon, double q, int64_t steps,
                                        double delta, double epsilon_tolerance) {
  if (!(target_epsilon > 0) || !std::isfinite(target_epsilon)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target epsilon ", target_epsilon, " is not > 0"));
  }
  if (!(q > 0 && q <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("sample rate ", q, " is not in (0, 1]"));
  }
  if (steps < 1) return absl::InvalidArgumentError(absl::StrCat("steps ", steps, " is not >= 1"));
  auto eps_at = [&](double sigma) -> StatusOr<double> {
    FEDSILO_ASSIGN_OR_RETURN(PrivacySpent s, ComputeEpsilon(q, sigma, steps, delta));
    return s.epsilon;
  };
  // Double the upper bound until it meets the target, then bisect.
  double low = 0, high = 10, eps_high = kInf;
  while (eps_high > target_epsilon) {
    high *= 2;
    if (high > 1e6) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target epsilon ", target_epsilon, " needs a noise multiplier above 1e6 at sample rate ",
          q, " over ", steps, " steps; the budget is too small"));
    }
    FEDSILO_ASSIGN_OR_RETURN(eps_high, eps_at(high));
  }
  while (target_epsilon - eps_high > epsilon_tolerance) {
    const double mid = (low + high) / 2;
    FEDSILO_ASSIGN_OR_RETURN(double eps, eps_at(mid));
    if (eps < target_epsilon) {
      high = mid;
      eps_high = eps;
    } else {
      low = mid;
    }
  }
  return high;
}

}  // namespace fedsilo::privacy
