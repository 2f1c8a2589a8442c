// SiloAgent: one silo's side of a round. It trains the global model on the
// silo's own data and answers with the update (local minus global), its number
// of training examples and the metrics it measured on its own train and test
// sets. Raw examples never leave it.
//
// With privacy.dp.mode local it trains with DP-SGD, its sampling and noise
// drawn from a CSPRNG keyed by the operating system (never from the job, which
// the orchestrator knows), and reports "epsilon": what the run has spent of
// this silo's data so far, at privacy.dp.delta, by the RDP accountant.
//
// Admission comes first: with a PrivacyGuard, every task is checked against
// the silo's policy and the run's pinned job before the model is built or a
// row is touched, a run's DP-SGD plan is fixed by the ledger (a restarted silo
// continues it), and a round's steps are charged to the ledger before it
// trains. Without a guard the default policy applies and nothing is recorded.
//
// With privacy.secure_aggregation the update never leaves unmasked: RunTask()
// answers with the metrics only (and no example count, which is masked too),
// and the following SecureStep() calls run this silo's side of the protocol
// (secure/secagg.h) on the update it kept.
//
// An EvaluateTask scores the global model on the silo's test
// rows and answers with metrics only (for binary tasks with the counts behind
// precision and recall, so that the federation can add them up).
//
// Thread safety: one task at a time per agent (the orchestrator never sends a
// silo two requests at once); different agents run concurrently.
#ifndef FEDSILO_SILO_SILO_AGENT_H_
#define FEDSILO_SILO_SILO_AGENT_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "core/busy_clock.h"
#include "ml/model.h"
#include "ml/partitioner.h"
#include "ml/sandbox.h"
#include "secure/secagg.h"
#include "silo/privacy_guard.h"
#include "transport/silo_connection.h"

namespace fedsilo::silo {

// How long one call into a job's sandboxed module may take: the job's round
// timeout (a module that takes longer has lost the round anyway), but at
// least a minute (a worker starts and loads a module in seconds on a loaded
// machine) and at most `silo_max`, the longest the silo allows.
std::chrono::seconds ModuleCallDeadline(std::chrono::seconds silo_max, int round_timeout);

class SiloAgent : public transport::SiloHandler {
 public:
  // `busy_clock` (may be null) records the time spent training and evaluating.
  SiloAgent(std::string name, ml::SiloData data, BusyClock* busy_clock);

  // Consults `guard` (not owned; may be null) before every task, charges
  // each round's DP-SGD steps to `dataset` in its ledger before training, and
  // records there the secure-aggregation sums it reveals shares for.
  void SetPrivacyGuard(PrivacyGuard* guard, std::string dataset);

  // Where the job's TorchScript module is on this silo (the job names a
  // shipped one by digest). Empty: the job's model.torchscript as it is.
  void SetModulePath(std::string path) { module_path_ = std::move(path); }
  // Where a job's TorchScript module runs (not owned; may be null, and then
  // such jobs are refused): never in this process.
  void SetSandbox(const ml::Sandbox* sandbox) { sandbox_ = sandbox; }

  // Signs this silo's secure-aggregation keys (secure/secagg.h).
  void SetSecAggIdentity(std::shared_ptr<const secure::SecAggIdentity> identity) {
    secagg_.SetIdentity(std::move(identity));
  }

  // SCAFFOLD: where this silo keeps its control variate c_i between rounds
  // (and restarts), sealed at rest like models. Empty: in memory only.
  void SetControlVariatePath(std::string path) { control_path_ = std::move(path); }

  const std::string& name() const { return name_; }
  const ml::SiloData& data() const { return data_; }

  // Errors name the silo and round: "silo 'silo-2': round 3: ...".
  StatusOr<transport::FitReply> RunTask(const transport::TaskRequest& request) override;
  StatusOr<std::string> SecureStep(const transport::SecureStepRequest& request) override;

 private:
  // A fit or evaluate task, once admitted, on the model built on its first.
  StatusOr<transport::FitReply> Perform(const transport::TaskRequest& request);
  Status BuildModel(const JobConfig& job, uint64_t seed);
  // Checks the task against the policy and the run's pinned job; on a run's
  // first task, admits it (fixing its DP-SGD plan).
  Status Admit(const transport::TaskRequest& request);
  // The rules of the silo's policy for this agent's dataset (the defaults
  // without a guard).
  const DatasetPolicy& Rules() const;
  // The score of `global` on the test rows (an EvaluateTask).
  StatusOr<transport::FitReply> Evaluate(const transport::TaskRequest& request,
                                         const ModelState& global);
  // A FitTask: local training from `sent`; the reply's update is the local
  // model minus the global one.
  StatusOr<transport::FitReply> Train(const transport::TaskRequest& request,
                                      const ModelState& sent);
  // The round's DP charge and local training; sets the reply's example count
  // and metrics and returns the steps taken. `server_control`: SCAFFOLD's c.
  StatusOr<int64_t> TrainLocally(const transport::TaskRequest& request,
                                 const TrainingConfig& training, const ModelState* server_control,
                                 transport::FitReply& reply);
  // SCAFFOLD: moves c_i on after a round of `steps` that gave `update`, keeps
  // it, and returns Δc_i for the orchestrator.
  StatusOr<ModelState> StepControl(int round, const TrainingConfig& training, int64_t steps,
                                   const ModelState& server_control, const ModelState& update);

  std::string name_;
  ml::SiloData data_;
  BusyClock* busy_clock_;
  std::unique_ptr<ml::Model> model_;  // built once the first task is admitted
  PrivacyGuard* guard_ = nullptr;
  std::string guard_dataset_;
  std::string module_path_;
  const ml::Sandbox* sandbox_ = nullptr;
  std::string admitted_run_;  // the run admitted (and its DP plan fixed)
  std::optional<DpPlan> dp_;  // that run's DP-SGD plan
  int64_t dp_steps_ = 0;      // without a guard: DP-SGD steps taken in the run
  secure::SecAggSilo secagg_{name_};
  // SCAFFOLD's c_i, for the run `control_run_`.
  Status LoadControl(const std::string& run_id, const ModelState& model);
  ModelState control_;
  std::string control_run_;
  std::string control_path_;
};

}  // namespace fedsilo::silo

#endif  // FEDSILO_SILO_SILO_AGENT_H_
