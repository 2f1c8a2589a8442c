// Simulated attackers for robustness experiments (`fedsilo run --attack KIND
// --attackers N`): a hostile silo trains like an honest one, then corrupts
// the update it sends.
//   sign_flip  the update times -10 (pushes the model the other way, hard)
//   noise      Gaussian noise with 100x the update's own RMS, instead of it
#ifndef FEDSILO_CLI_HOSTILE_SILO_H_
#define FEDSILO_CLI_HOSTILE_SILO_H_

#include <cstdint>
#include <random>
#include <string>

#include "core/status.h"
#include "transport/silo_connection.h"

namespace fedsilo::cli {

enum class Attack { kSignFlip, kNoise };

// InvalidArgument naming the flag for an unknown kind.
StatusOr<Attack> ParseAttack(const std::string& name);

class HostileSilo : public transport::SiloHandler {
 public:
  // `inner` (not owned) trains; its update is then corrupted.
  HostileSilo(transport::SiloHandler* inner, Attack attack, uint64_t seed)
      : inner_(inner), attack_(attack), rng_(seed) {}
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& request) override;
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest& request) override {
    return inner_->SecureStep(request);
  }

 private:
  transport::SiloHandler* inner_;
  Attack attack_;
  std::mt19937_64 rng_;
};

}  // namespace fedsilo::cli

#endif  // FEDSILO_CLI_HOSTILE_SILO_H_
