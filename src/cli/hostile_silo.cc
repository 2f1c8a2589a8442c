#include "cli/hostile_silo.h"

#include <cmath>
#include <variant>

#include "absl/strings/str_cat.h"

namespace fedsilo::cli {

StatusOr<Attack> ParseAttack(const std::string& name) {
  if (name == "sign_flip") return Attack::kSignFlip;
  if (name == "noise") return Attack::kNoise;
  return absl::InvalidArgumentError(
      absl::StrCat("--attack: unknown attack '", name, "'; one of: sign_flip, noise"));
}

StatusOr<transport::FitReply> HostileSilo::RunTask(const transport::TaskRequest& request) {
  FEDSILO_ASSIGN_OR_RETURN(transport::FitReply reply, inner_->RunTask(request));
  // Attacks updates only.
  if (!std::holds_alternative<transport::FitTask>(request.task)) return reply;
  double squares = 0;
  int64_t count = 0;
  for (const Tensor& t : reply.update.tensors()) {
    for (float v : t.floats()) squares += static_cast<double>(v) * v;
    count += t.num_elements();
  }
  const double rms = count > 0 ? std::sqrt(squares / static_cast<double>(count)) : 0;
  std::normal_distribution<float> noise(0.f, static_cast<float>(100 * rms));
  for (Tensor& t : reply.update.mutable_tensors()) {
    for (float& v : t.floats()) v = attack_ == Attack::kSignFlip ? -10 * v : noise(rng_);
  }
  return reply;
}

}  // namespace fedsilo::cli
