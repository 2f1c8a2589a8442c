// SiloAgent: one silo's side of a round. It trains the global model on the
// silo's own data and answers with the update (local minus global), its number
// of training examples and the metrics it measured on its own train and test
// sets. Raw examples never leave it.
//
// With privacy.dp.mode local it trains with DP-SGD, its sampling and noise
// seeded from the operating system (never from the job, which the
// orchestrator knows), and reports "epsilon": what the run has spent of this
// silo's data so far, at privacy.dp.delta, by the RDP accountant.
//
// With privacy.secure_aggregation the update never leaves unmasked: Fit()
// answers with the metrics only (and no example count, which is masked too),
// and the following SecureStep() calls run this silo's side of the protocol
// (secure/secagg.h) on the update it kept.
//
// A TaskKind::kEvaluate request scores the global model on the silo's test
// rows and answers with metrics only (for binary tasks with the counts behind
// precision and recall, so that the federation can add them up).
//
// Thread safety: one Fit at a time per agent (the orchestrator never sends a
// silo two requests at once); different agents run concurrently.
#ifndef FEDSILO_SILO_SILO_AGENT_H_
#define FEDSILO_SILO_SILO_AGENT_H_

#include <memory>
#include <string>

#include "core/busy_clock.h"
#include "ml/model.h"
#include "ml/partitioner.h"
#include "secure/secagg.h"
#include "transport/silo_connection.h"

namespace fedsilo::silo {

class PrivacyGuard;

class SiloAgent : public transport::SiloHandler {
 public:
  // `busy_clock` (may be null) records the time spent training and evaluating.
  SiloAgent(std::string name, ml::SiloData data, BusyClock* busy_clock);

  // Consults `guard` (not owned; may be null) before the run's first training
  // and records the run's spending on `dataset` after each round.
  void SetPrivacyGuard(PrivacyGuard* guard, std::string dataset) {
    guard_ = guard;
    guard_dataset_ = std::move(dataset);
  }

  // SCAFFOLD: where this silo keeps its control variate c_i between rounds
  // (and restarts), sealed at rest like models. Empty: in memory only.
  void SetControlVariatePath(std::string path) { control_path_ = std::move(path); }

  const std::string& name() const { return name_; }
  const ml::SiloData& data() const { return data_; }

  // Errors name the silo and round: "silo 'silo-2': round 3: ...".
  StatusOr<transport::FitReply> Fit(const transport::FitRequest& request) override;
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest& request) override;

 private:
  StatusOr<transport::FitReply> FitImpl(const transport::FitRequest& request);
  // Consults the policy once per run, before the first training or evaluation.
  Status Admit(const transport::FitRequest& request);

  // With privacy.dp.mode local: the noise multiplier for this silo's data
  // (given, or solved from target_epsilon over the whole job), fixed on the
  // first request.
  StatusOr<double> DpNoiseMultiplier(const JobConfig& job);
  // DP-SGD's sample rate on this silo's data, and its steps over the whole job.
  double DpRate(const JobConfig& job) const;
  int64_t DpJobSteps(const JobConfig& job) const;

  std::string name_;
  ml::SiloData data_;
  BusyClock* busy_clock_;
  std::unique_ptr<ml::Model> model_;  // built on the first request
  double dp_noise_multiplier_ = 0;    // 0 until known
  PrivacyGuard* guard_ = nullptr;
  std::string guard_dataset_;
  bool admitted_ = false;
  int64_t dp_steps_ = 0;  // DP-SGD steps taken so far in this run
  secure::SecAggSilo secagg_{name_};
  // SCAFFOLD's c_i, for the run `control_run_`.
  Status LoadControl(const std::string& run_id, const ModelState& model);
  ModelState control_;
  std::string control_run_;
  std::string control_path_;
};

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_SILO_AGENT_H_
