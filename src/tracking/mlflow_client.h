// MlflowClient: the calls of an MLflow tracking server's REST API (2.0) that
// fedsilo uses: experiments, runs, log-batch and artifact upload through the
// server's artifact proxy (`mlflow server --serve-artifacts`, the default).
//
// Credentials come from MLflow's own environment variables, never from job
// files: MLFLOW_TRACKING_TOKEN (bearer), MLFLOW_TRACKING_USERNAME and
// MLFLOW_TRACKING_PASSWORD (basic), MLFLOW_TRACKING_SERVER_CERT_PATH (CA for
// https) and MLFLOW_TRACKING_INSECURE_TLS=true (no certificate check).
//
// Errors: Unavailable when it is worth trying again (no connection, timeout,
// HTTP 429 or 5xx); otherwise InvalidArgument (or NotFound for a missing
// resource) with the server's message.
//
// Thread safety: one thread at a time.
#ifndef FEDSILO_TRACKING_MLFLOW_CLIENT_H_
#define FEDSILO_TRACKING_MLFLOW_CLIENT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace httplib {
class Client;
}

namespace fedsilo::tracking {

struct MlflowRun {
  std::string run_id;
  std::string experiment_id;
  std::string artifact_uri;  // "mlflow-artifacts:/1/<run>/artifacts" behind the proxy
};

struct MlflowMetric {
  std::string key;
  double value = 0;
  int64_t timestamp_ms = 0;
  int64_t step = 0;
};

using MlflowParams = std::vector<std::pair<std::string, std::string>>;

class MlflowClient {
 public:
  // At most this many metrics, params and tags in one log-batch.
  static constexpr size_t kMaxBatchMetrics = 1000;
  static constexpr size_t kMaxBatchParams = 100;
  static constexpr size_t kMaxParamValue = 500;  // characters, on every MLflow version

  // InvalidArgument unless `uri` is http(s)://host[:port][/prefix].
  static StatusOr<std::unique_ptr<MlflowClient>> Create(const std::string& uri);
  ~MlflowClient();

  const std::string& uri() const { return uri_; }

  // The experiment's id; it is created when there is none of that name.
  StatusOr<std::string> GetOrCreateExperiment(const std::string& name);
  StatusOr<MlflowRun> CreateRun(const std::string& experiment_id, const std::string& run_name,
                                int64_t start_ms, const std::map<std::string, std::string>& tags);
  StatusOr<MlflowRun> GetRun(const std::string& run_id);
  // Values longer than kMaxParamValue are cut (ending in "...").
  Status LogBatch(const std::string& run_id, const std::vector<MlflowMetric>& metrics,
                  const MlflowParams& params);
  // `status`: RUNNING, FINISHED, FAILED or KILLED.
  Status UpdateRun(const std::string& run_id, const std::string& status, int64_t end_ms);
  // Puts `bytes` at `path` (e.g. "model/final_model.fsm") among the run's
  // artifacts. FailedPrecondition when the server does not proxy artifacts.
  Status UploadArtifact(const MlflowRun& run, const std::string& path, const std::string& bytes);

 private:
  MlflowClient(std::string uri, std::string origin, std::string prefix);
  std::unique_ptr<httplib::Client> Connect(const std::string& origin) const;
  // POSTs (or GETs, when `body` is null) an /api/2.0/mlflow/ call; the reply's JSON text.
  StatusOr<std::string> Call(const std::string& method, const std::string& api_path,
                             const std::string* body);

  std::string uri_;
  std::string origin_;  // "http://host:port"
  std::string prefix_;  // "" or "/mlflow"
  std::unique_ptr<httplib::Client> http_;
};

}  // namespace fedsilo::tracking

#endif  // FEDSILO_TRACKING_MLFLOW_CLIENT_H_
