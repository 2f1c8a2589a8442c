#include "cli/privacy_command.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "privacy/rdp_accountant.h"

namespace fedsilo::cli {
namespace {

// The number of steps from --steps or --epochs, with the flags checked.
StatusOr<int64_t> Steps(const PrivacyOptions& o) {
  if (!(o.sample_rate > 0 && o.sample_rate <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sample-rate ", o.sample_rate, " is not in (0, 1]"));
  }
  if (!(o.delta > 0 && o.delta < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--delta ", o.delta, " is not in (0, 1)"));
  }
  if ((o.steps > 0) == (o.epochs > 0)) {
    return absl::InvalidArgumentError("give exactly one of --steps and --epochs (both > 0)");
  }
  if (o.steps > 0) return o.steps;
  // As the reference implementations count them: epochs / sample rate, rounded down.
  return static_cast<int64_t>(std::floor(o.epochs / o.sample_rate + 1e-9));
}

}  // namespace

Status PrivacyEpsilonCommand(const PrivacyOptions& o) {
  FEDSILO_ASSIGN_OR_RETURN(int64_t steps, Steps(o));
  if (!(o.noise_multiplier >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--noise-multiplier ", o.noise_multiplier, " is not >= 0"));
  }
  FEDSILO_ASSIGN_OR_RETURN(
      privacy::PrivacySpent spent,
      privacy::ComputeEpsilon(o.sample_rate, o.noise_multiplier, steps, o.delta));
  std::printf(
      "epsilon %.4f at delta %g after %lld steps (sample rate %g, noise multiplier %g); best RDP "
      "order %g\n",
      spent.epsilon, o.delta, static_cast<long long>(steps), o.sample_rate, o.noise_multiplier,
      spent.order);
  if (o.json) {
    nlohmann::json j = {{"epsilon", spent.epsilon},
                        {"order", spent.order},
                        {"delta", o.delta},
                        {"steps", steps},
                        {"sample_rate", o.sample_rate},
                        {"noise_multiplier", o.noise_multiplier},
                        {"conversion", "balle2020"}};
    if (std::isinf(spent.epsilon)) j["epsilon"] = nullptr;
    std::printf("%s\n", j.dump().c_str());
  }
  return absl::OkStatus();
}

Status PrivacyNoiseCommand(const PrivacyOptions& o) {
  FEDSILO_ASSIGN_OR_RETURN(int64_t steps, Steps(o));
  if (!(o.target_epsilon > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target-epsilon ", o.target_epsilon, " is not > 0"));
  }
  FEDSILO_ASSIGN_OR_RETURN(double sigma, privacy::ComputeNoiseMultiplier(
                                             o.target_epsilon, o.sample_rate, steps, o.delta));
  FEDSILO_ASSIGN_OR_RETURN(privacy::PrivacySpent spent,
                           privacy::ComputeEpsilon(o.sample_rate, sigma, steps, o.delta));
  std::printf(
      "noise multiplier %.6f gives epsilon %.4f <= %g at delta %g over %lld steps (sample rate "
      "%g)\n",
      sigma, spent.epsilon, o.target_epsilon, o.delta, static_cast<long long>(steps),
      o.sample_rate);
  if (o.json) {
    nlohmann::json j = {
        {"noise_multiplier", sigma},          {"epsilon", spent.epsilon}, {"order", spent.order},
        {"target_epsilon", o.target_epsilon}, {"delta", o.delta},         {"steps", steps},
        {"sample_rate", o.sample_rate}};
    std::printf("%s\n", j.dump().c_str());
  }
  return absl::OkStatus();
}

void RegisterPrivacyCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<PrivacyOptions>();
  CLI::App* privacy = app.add_subcommand(
      "privacy", "Differential privacy accounting (RDP of the sampled Gaussian mechanism)");
  privacy->require_subcommand(1);
  CLI::App* epsilon = privacy->add_subcommand(
      "epsilon", "The epsilon spent by DP-SGD / DP-FedAvg steps at a given delta");
  CLI::App* noise = privacy->add_subcommand(
      "noise", "The smallest noise multiplier that keeps epsilon within a target");
  for (CLI::App* c : {epsilon, noise}) {
    c->add_option("--sample-rate,-q", options->sample_rate,
                  "Probability that a record (or silo) takes part in a step")
        ->required();
    c->add_option("--steps", options->steps, "Number of noisy steps");
    c->add_option("--epochs", options->epochs,
                  "Instead of --steps: epochs; steps = epochs / sample rate, rounded down");
    c->add_option("--delta", options->delta, "Target delta")->capture_default_str();
    c->add_flag("--json", options->json, "Print a JSON object as the last line");
  }
  epsilon
      ->add_option("--noise-multiplier,-s", options->noise_multiplier,
                   "Noise standard deviation / clipping norm")
      ->required();
  noise->add_option("--target-epsilon,-e", options->target_epsilon, "Epsilon to stay within")
      ->required();
  commands.Add(epsilon, kNoSetUp, [options] { return PrivacyEpsilonCommand(*options); });
  commands.Add(noise, kNoSetUp, [options] { return PrivacyNoiseCommand(*options); });
}

}  // namespace fedsilo::cli
