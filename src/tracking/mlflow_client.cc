#include "tracking/mlflow_client.h"

#include <httplib.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fedsilo::tracking {
namespace {

constexpr char kApi[] = "/api/2.0/mlflow/";
constexpr char kArtifactApi[] = "/api/2.0/mlflow-artifacts/artifacts/";

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// "http://host:port/prefix" -> {"http://host:port", "/prefix"}; false when malformed.
bool SplitUri(const std::string& uri, std::string* origin, std::string* prefix) {
  const size_t scheme_end = uri.find("://");
  if (scheme_end == std::string::npos) return false;
  const std::string scheme = uri.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return false;
  const size_t host_start = scheme_end + 3;
  const size_t slash = uri.find('/', host_start);
  const std::string authority =
      uri.substr(host_start, slash == std::string::npos ? std::string::npos : slash - host_start);
  if (authority.empty() || authority.front() == ':') return false;
  *origin = absl::StrCat(scheme, "://", authority);
  *prefix = slash == std::string::npos ? "" : uri.substr(slash);
  while (!prefix->empty() && prefix->back() == '/') prefix->pop_back();
  return true;
}

// What went wrong below HTTP, in words.
std::string NetworkError(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "cannot connect (is the server up, and the address right?)";
    case httplib::Error::ConnectionTimeout:
      return "no answer to the connection within 5 s";
    case httplib::Error::Read:
      return "no reply within 30 s, or the connection broke";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed";
    case httplib::Error::SSLServerVerification:
      return "its certificate is not trusted (set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA)";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load MLFLOW_TRACKING_SERVER_CERT_PATH";
    default:
      return absl::StrCat("network error (", httplib::to_string(error), ")");
  }
}

// MLflow's {"error_code": ..., "message": ...}, or the start of the body.
std::string ErrorText(const std::string& body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) {
    return absl::StrCat(j.value("error_code", std::string()), ": ",
                        j["message"].get<std::string>());
  }
  return body.substr(0, 200);
}

// A reply's body, or the error it stands for: Unavailable when worth trying
// again (no connection, 429, 5xx), NotFound for a missing resource,
// InvalidArgument for any other refusal. `where` names the call.
StatusOr<std::string> ReplyBody(const httplib::Result& result, const std::string& where) {
  if (!result) {
    return absl::UnavailableError(absl::StrCat(where, ": ", NetworkError(result.error())));
  }
  const int code = result->status;
  if (code >= 200 && code < 300) return result->body;
  const std::string text = absl::StrCat(where, ": HTTP ", code, " ", ErrorText(result->body));
  if (code == 429 || code >= 500) return absl::UnavailableError(text);
  if (code == 404 || absl::StrContains(result->body, "RESOURCE_DOES_NOT_EXIST")) {
    return absl::NotFoundError(text);
  }
  return absl::InvalidArgumentError(text);
}

StatusOr<MlflowRun> ParseRun(const std::string& body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("run") || !j["run"].contains("info")) {
    return absl::InvalidArgumentError("MLflow answered without a run");
  }
  const nlohmann::json& info = j["run"]["info"];
  MlflowRun run;
  run.run_id = info.value("run_id", info.value("run_uuid", std::string()));
  run.experiment_id = info.value("experiment_id", std::string());
  run.artifact_uri = info.value("artifact_uri", std::string());
  if (run.run_id.empty()) return absl::InvalidArgumentError("MLflow answered without a run id");
  return run;
}

}  // namespace

StatusOr<std::unique_ptr<MlflowClient>> MlflowClient::Create(const std::string& uri) {
  std::string origin, prefix;
  if (!SplitUri(uri, &origin, &prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tracking.mlflow.uri: '", uri, "' is not http(s)://host[:port][/prefix]"));
  }
  return std::unique_ptr<MlflowClient>(new MlflowClient(uri, origin, prefix));
}

MlflowClient::MlflowClient(std::string uri, std::string origin, std::string prefix)
    : uri_(std::move(uri)), origin_(std::move(origin)), prefix_(std::move(prefix)) {
  http_ = Connect(origin_);
}

MlflowClient::~MlflowClient() = default;

std::unique_ptr<httplib::Client> MlflowClient::Connect(const std::string& origin) const {
  auto http = std::make_unique<httplib::Client>(origin);
  http->set_connection_timeout(5, 0);
  http->set_read_timeout(30, 0);
  http->set_write_timeout(300, 0);  // a large model takes its time
  http->set_keep_alive(true);
  if (const std::string token = Env("MLFLOW_TRACKING_TOKEN"); !token.empty()) {
    http->set_bearer_token_auth(token);
  } else if (const std::string user = Env("MLFLOW_TRACKING_USERNAME"); !user.empty()) {
    http->set_basic_auth(user, Env("MLFLOW_TRACKING_PASSWORD"));
  }
  if (const std::string ca = Env("MLFLOW_TRACKING_SERVER_CERT_PATH"); !ca.empty()) {
    http->set_ca_cert_path(ca);
  }
  const std::string insecure = Env("MLFLOW_TRACKING_INSECURE_TLS");
  if (insecure == "true" || insecure == "1") http->enable_server_certificate_verification(false);
  return http;
}

StatusOr<std::string> MlflowClient::Call(const std::string& method, const std::string& api_path,
                                         const std::string* body) {
  const std::string path = absl::StrCat(prefix_, kApi, api_path);
  httplib::Result result =
      body == nullptr ? http_->Get(path) : http_->Post(path, *body, "application/json");
  return ReplyBody(result, absl::StrCat("MLflow at ", uri_, " (", method, ")"));
}

StatusOr<std::string> MlflowClient::GetOrCreateExperiment(const std::string& name) {
  const std::string query =
      httplib::append_query_params("experiments/get-by-name", {{"experiment_name", name}});
  for (int attempt = 0; attempt < 2; ++attempt) {
    StatusOr<std::string> found = Call("experiments/get-by-name", query, nullptr);
    if (found.ok()) {
      nlohmann::json j = nlohmann::json::parse(*found, nullptr, false);
      if (j.is_object() && j.contains("experiment")) {
        return j["experiment"].value("experiment_id", std::string());
      }
      return absl::InvalidArgumentError("MLflow answered get-by-name without an experiment");
    }
    if (!absl::IsNotFound(found.status())) return found.status();
    const std::string request = nlohmann::json({{"name", name}}).dump();
    StatusOr<std::string> created = Call("experiments/create", "experiments/create", &request);
    if (created.ok()) {
      nlohmann::json j = nlohmann::json::parse(*created, nullptr, false);
      if (j.is_object() && j.contains("experiment_id")) {
        return j["experiment_id"].get<std::string>();
      }
      return absl::InvalidArgumentError("MLflow created an experiment without an id");
    }
    // Made by someone else meanwhile: look it up again.
    if (!absl::StrContains(created.status().message(), "RESOURCE_ALREADY_EXISTS")) {
      return created.status();
    }
  }
  return absl::UnavailableError(
      absl::StrCat("MLflow at ", uri_, ": experiment '", name, "' neither found nor created"));
}

StatusOr<MlflowRun> MlflowClient::CreateRun(const std::string& experiment_id,
                                            const std::string& run_name, int64_t start_ms,
                                            const std::map<std::string, std::string>& tags) {
  nlohmann::json request = {{"experiment_id", experiment_id},
                            {"run_name", run_name},
                            {"start_time", start_ms},
                            {"tags", nlohmann::json::array()}};
  for (const auto& [key, value] : tags) request["tags"].push_back({{"key", key}, {"value", value}});
  const std::string body = request.dump();
  FEDSILO_ASSIGN_OR_RETURN(std::string reply, Call("runs/create", "runs/create", &body));
  return ParseRun(reply);
}

StatusOr<MlflowRun> MlflowClient::GetRun(const std::string& run_id) {
  FEDSILO_ASSIGN_OR_RETURN(
      std::string reply,
      Call("runs/get", httplib::append_query_params("runs/get", {{"run_id", run_id}}), nullptr));
  return ParseRun(reply);
}

Status MlflowClient::LogBatch(const std::string& run_id, const std::vector<MlflowMetric>& metrics,
                              const MlflowParams& params) {
  nlohmann::json request = {{"run_id", run_id},
                            {"metrics", nlohmann::json::array()},
                            {"params", nlohmann::json::array()}};
  for (const MlflowMetric& m : metrics) {
    request["metrics"].push_back(
        {{"key", m.key}, {"value", m.value}, {"timestamp", m.timestamp_ms}, {"step", m.step}});
  }
  for (const auto& [key, value] : params) {
    std::string v = value;
    if (v.size() > kMaxParamValue) v = v.substr(0, kMaxParamValue - 3) + "...";
    request["params"].push_back({{"key", key}, {"value", v}});
  }
  const std::string body = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return Call("runs/log-batch", "runs/log-batch", &body).status();
}

Status MlflowClient::UpdateRun(const std::string& run_id, const std::string& status,
                               int64_t end_ms) {
  nlohmann::json request = {{"run_id", run_id}, {"status", status}};
  if (status != "RUNNING") request["end_time"] = end_ms;
  const std::string body = request.dump();
  return Call("runs/update", "runs/update", &body).status();
}

Status MlflowClient::UploadArtifact(const MlflowRun& run, const std::string& path,
                                    const std::string& bytes) {
  std::string root = run.artifact_uri;
  while (!root.empty() && root.back() == '/') root.pop_back();
  std::unique_ptr<httplib::Client> other;
  httplib::Client* http = http_.get();
  std::string url_path;
  absl::string_view rest = root;
  if (absl::ConsumePrefix(&rest, "mlflow-artifacts:")) {
    // "mlflow-artifacts:/1/<run>/artifacts", or with an authority: "//host:port/1/...".
    if (absl::ConsumePrefix(&rest, "//")) {
      const size_t slash = rest.find('/');
      rest = slash == absl::string_view::npos ? "" : rest.substr(slash);
    }
    url_path = absl::StrCat(prefix_, kArtifactApi, absl::StripPrefix(rest, "/"), "/", path);
  } else if (absl::StartsWith(root, "http://") || absl::StartsWith(root, "https://")) {
    std::string origin, root_path;
    if (!SplitUri(root, &origin, &root_path)) {
      return absl::FailedPreconditionError(absl::StrCat("MLflow run ", run.run_id,
                                                        ": artifact location '", run.artifact_uri,
                                                        "' is not a URL fedsilo can write to"));
    }
    other = Connect(origin);
    http = other.get();
    url_path = absl::StrCat(root_path, "/", path);
  } else {
    return absl::FailedPreconditionError(
        absl::StrCat("MLflow run ", run.run_id, ": artifacts go to '", run.artifact_uri,
                     "', which only the MLflow Python client writes; start the server with "
                     "--serve-artifacts (the default since MLflow 2.0) to upload through it"));
  }
  httplib::Result result = http->Put(url_path, bytes, "application/octet-stream");
  return ReplyBody(result, absl::StrCat("MLflow at ", uri_, " (artifact ", path, ")")).status();
}

}  // namespace fedsilo::tracking
