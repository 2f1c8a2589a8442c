// JobManager: the orchestrator daemon's job queue. Jobs submitted by users are
// recorded in the JobStore and run one at a time, oldest first, each as a
// JobRun (orchestrator/job_run.h) against the silos connected to the gRPC
// endpoint. A job that was running when the orchestrator stopped (or was
// killed) is resumed from its last committed round when the manager starts
// again.
//
// Layout of the state directory:
//   <state>/fedsilo.db                 the JobStore
//   <state>/runs/<run_id>/             one RunDirectory per job: job.yaml,
//                                      checkpoints/, final_model.fsm
//
// Thread safety: all public methods are thread-safe.
#ifndef FEDSILO_ORCHESTRATOR_JOB_MANAGER_H_
#define FEDSILO_ORCHESTRATOR_JOB_MANAGER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/job_config.h"
#include "core/model_state.h"
#include "core/mutex.h"
#include "core/status.h"
#include "orchestrator/job_run.h"
#include "orchestrator/job_store.h"
#include "orchestrator/metrics.h"
#include "orchestrator/mlflow_export.h"
#include "orchestrator/orchestrator.h"
#include "orchestrator/silo_registry.h"
#include "secure/audit_log.h"
#include "transport/orchestrator_service.h"

namespace fedsilo::orchestrator {

class JobManager {
 public:
  // All pointers must outlive the manager. `state_dir` must exist.
  JobManager(std::string state_dir, JobStore* store, transport::OrchestratorService* service,
             SiloRegistry* registry, JobPreparer* preparer);
  ~JobManager();  // Stop()

  // Records submissions, aborts, job outcomes and every round's digests in
  // `audit` (not owned; may be null). Call before Start().
  void SetAuditLog(secure::AuditLog* audit) { audit_ = audit; }
  // Counts every committed round and its duration there. Call before Start().
  void SetMetrics(OrchestratorMetrics* metrics) { metrics_ = metrics; }
  // The MLflow tracking servers jobs may export to (tracking.mlflow.uri, as
  // written there). Without this, none: the orchestrator's credentials
  // (MLFLOW_TRACKING_TOKEN...) go to no server a user names. Call before
  // Start().
  void SetMlflowAllowlist(std::vector<std::string> uris) { mlflow_allowed_ = std::move(uris); }
  // The federation's CA certificate: silos' secure-aggregation signatures are
  // checked against it (OrchestratorOptions::federation_ca_pem). Call before
  // Start().
  void SetFederationCa(std::string ca_pem) { federation_ca_pem_ = std::move(ca_pem); }

  // Marks interrupted jobs for resumption and starts the worker thread.
  void Start();
  // Stops the worker at once. A running job is left 'running' and resumes on
  // the next Start(); its current round is lost, completed rounds are not.
  void Stop();

  // Validates and queues a job. InvalidArgument naming the key for a bad job.
  // A model.torchscript job comes with its module's bytes (`torchscript`),
  // which are kept as <state>/models/<sha256>.pt; the job then names the
  // module "sha256:<hex>", and that is what its silos are sent.
  StatusOr<JobRecord> Submit(const std::string& owner, const std::string& job_yaml,
                             const std::string& torchscript = "");
  // The job with its shipped module's name ("sha256:<hex>") replaced by the
  // file that keeps it here.
  StatusOr<JobConfig> ResolveModule(const JobConfig& job) const;
  // Stops a queued or running job. PermissionDenied unless `user` owns it;
  // FailedPrecondition when it has already finished.
  StatusOr<JobRecord> Abort(const std::string& id, const std::string& user,
                            const std::string& reason);
  // The final model file of a finished job, for `user`: PermissionDenied
  // naming who may have it unless `user` submitted the job or is one of the
  // federation's leads; FailedPrecondition before it is done.
  StatusOr<std::string> FinalModelPath(const std::string& id, const std::string& user) const;
  // Whether `user` may take job `id`'s models and results: the one place
  // that decides (download, and what later reads a job's models).
  Status MayTakeResults(const JobRecord& job, const std::string& user) const;
  // Users who may take every job's results (--lead). Call before Start().
  void SetLeads(std::vector<std::string> leads) { leads_ = std::move(leads); }

  JobStore& store() const { return *store_; }
  std::vector<SiloStatus> Silos() const { return registry_->Snapshot(); }

 private:
  void WorkerLoop();
  // Runs (or resumes) one job to its end, recording its outcome.
  void RunJob(JobRecord record);
  // Sets `*run` once the run folder is known.
  Status RunJobRounds(const JobRecord& record, JobConfig job, std::unique_ptr<JobRun>* run);
  // Waits for the job's silos to connect, up to federation.wait_for_silos;
  // then goes on with federation.min_silos of them, or with none missing
  // when `every_silo`.
  Status WaitForSilos(const JobRecord& record, const JobConfig& job, bool every_silo = false);
  // A vertical job's run: every party opened (each checks the job against
  // its policy), then the intersection and the rounds.
  Status RunVerticalJob(const JobRecord& record, const JobConfig& job, JobRun* run,
                        const JobRunOptions& options);
  void Event(const std::string& job_id, const std::string& level, const std::string& message);
  bool Stopping() const;

  std::string state_dir_;
  JobStore* store_;
  transport::OrchestratorService* service_;
  SiloRegistry* registry_;
  JobPreparer* preparer_;

  mutable Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string current_job_ ABSL_GUARDED_BY(mu_);
  std::string current_run_ ABSL_GUARDED_BY(mu_);
  bool abort_current_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stop_run_{false};  // tells the running Orchestrator to stop
  std::thread worker_;
  secure::AuditLog* audit_ = nullptr;
  OrchestratorMetrics* metrics_ = nullptr;
  std::vector<std::string> mlflow_allowed_;
  std::string federation_ca_pem_;
  std::vector<std::string> leads_;
  // InvalidArgument naming tracking.mlflow.uri and the allowed servers unless
  // the job exports nowhere or to one of them.
  Status CheckMlflow(const JobConfig& job) const;
};

}  // namespace fedsilo::orchestrator

#endif  // FEDSILO_ORCHESTRATOR_JOB_MANAGER_H_
