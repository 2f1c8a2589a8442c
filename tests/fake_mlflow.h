// A stand-in for an MLflow tracking server in tests: the REST calls fedsilo
// makes (experiments get-by-name/create, runs create/get/update/log-batch and
// artifact upload through the proxy), checked as MLflow checks them (a run
// must exist; at most 1000 metrics and 100 params per batch; a param keeps
// its first value), served by cpp-httplib on 127.0.0.1. It can fail the next
// N calls with a status code, to play an outage.
#ifndef FEDSILO_TESTS_FAKE_MLFLOW_H_
#define FEDSILO_TESTS_FAKE_MLFLOW_H_

#include <httplib.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace fedsilo::testing_util {

class FakeMlflow {
 public:
  struct Metric {
    std::string key;
    double value;
    int64_t step;
    int64_t timestamp;
  };
  struct Run {
    std::string id, experiment_id, name, status = "RUNNING";
    std::map<std::string, std::string> params, tags;
    std::vector<Metric> metrics;
    bool ended = false;
  };

  FakeMlflow() {
    server_.Get("/api/2.0/mlflow/experiments/get-by-name",
                [this](const httplib::Request& req, httplib::Response& res) {
                  Handle(res, [&]() -> Reply {
                    const std::string name = req.get_param_value("experiment_name");
                    auto it = experiments_.find(name);
                    if (it == experiments_.end()) return NotFound("experiment " + name);
                    return {200, {{"experiment", {{"experiment_id", it->second}, {"name", name}}}}};
                  });
                });
    Post("experiments/create", [this](const nlohmann::json& body) -> Reply {
      const std::string name = body.value("name", "");
      if (name.empty()) return Invalid("name is required");
      if (experiments_.count(name)) return {400, Error("RESOURCE_ALREADY_EXISTS", name)};
      const std::string id = std::to_string(experiments_.size() + 1);
      experiments_[name] = id;
      return {200, {{"experiment_id", id}}};
    });
    Post("runs/create", [this](const nlohmann::json& body) -> Reply {
      Run run;
      run.experiment_id = body.value("experiment_id", "");
      bool known = false;
      for (const auto& [name, id] : experiments_) known = known || id == run.experiment_id;
      if (!known) return NotFound("experiment " + run.experiment_id);
      run.id = "run" + std::to_string(runs_.size() + 1);
      run.name = body.value("run_name", "");
      for (const auto& t : body.value("tags", nlohmann::json::array())) {
        run.tags[t["key"]] = t["value"];
      }
      runs_[run.id] = run;
      return {200, RunJson(run)};
    });
    server_.Get("/api/2.0/mlflow/runs/get",
                [this](const httplib::Request& req, httplib::Response& res) {
                  Handle(res, [&]() -> Reply {
                    auto it = runs_.find(req.get_param_value("run_id"));
                    if (it == runs_.end()) return NotFound("run");
                    return {200, RunJson(it->second)};
                  });
                });
    Post("runs/log-batch", [this](const nlohmann::json& body) -> Reply {
      auto it = runs_.find(body.value("run_id", ""));
      if (it == runs_.end()) return NotFound("run");
      const auto metrics = body.value("metrics", nlohmann::json::array());
      const auto params = body.value("params", nlohmann::json::array());
      if (metrics.size() > 1000 || params.size() > 100) return Invalid("batch too large");
      for (const auto& p : params) {
        const std::string key = p["key"], value = p["value"];
        auto old = it->second.params.find(key);
        if (old != it->second.params.end() && old->second != value) {
          return Invalid("changing param " + key);
        }
        it->second.params[key] = value;
      }
      for (const auto& m : metrics) {
        if (!m["value"].is_number() || !m["step"].is_number_integer() ||
            !m["timestamp"].is_number_integer()) {
          return Invalid("bad metric " + m.dump());
        }
        it->second.metrics.push_back({m["key"], m["value"], m["step"], m["timestamp"]});
      }
      ++log_batches_;
      return {200, nlohmann::json::object()};
    });
    Post("runs/update", [this](const nlohmann::json& body) -> Reply {
      auto it = runs_.find(body.value("run_id", ""));
      if (it == runs_.end()) return NotFound("run");
      it->second.status = body.value("status", "");
      it->second.ended = body.contains("end_time");
      return {200, {{"run_info", {{"status", it->second.status}}}}};
    });
    server_.Put(R"(/api/2.0/mlflow-artifacts/artifacts/(.*))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  Handle(res, [&]() -> Reply {
                    artifacts_[req.matches[1]] = req.body;
                    return {200, nlohmann::json::object()};
                  });
                });
    // Every request's credentials, as MLflow's auth would see them.
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response&) {
      std::lock_guard<std::mutex> lock(mu_);
      authorizations_.insert(req.get_header_value("Authorization"));
      return httplib::Server::HandlerResponse::Unhandled;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 200 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  ~FakeMlflow() {
    server_.stop();
    thread_.join();
  }

  std::string uri() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Where runs' artifacts are said to go: the proxy ("mlflow-artifacts:/",
  // the default) or, as a server without --serve-artifacts says, a bucket.
  void SetArtifactRoot(const std::string& root) {
    std::lock_guard<std::mutex> lock(mu_);
    artifact_root_ = root;
  }

  // The next `calls` requests get HTTP `status` (503: an outage).
  void FailNext(int calls, int status = 503) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_calls_ = calls;
    fail_status_ = status;
  }

  std::map<std::string, Run> runs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }
  std::map<std::string, std::string> experiments() const {
    std::lock_guard<std::mutex> lock(mu_);
    return experiments_;
  }
  // By path under the artifact root: "1/run1/artifacts/model/final_model.fsm".
  std::map<std::string, std::string> artifacts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return artifacts_;
  }
  // The Authorization headers requests came with ("" for none).
  std::set<std::string> authorizations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return authorizations_;
  }
  // The run whose tag fedsilo.job_id is `job` (an empty run when there is none).
  Run RunOfJob(const std::string& job) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, run] : runs_) {
      auto tag = run.tags.find("fedsilo.job_id");
      if (tag != run.tags.end() && tag->second == job) return run;
    }
    return Run();
  }
  int requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  int failed_requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_requests_;
  }

 private:
  struct Reply {
    int status;
    nlohmann::json body;
  };

  static nlohmann::json Error(const std::string& code, const std::string& message) {
    return {{"error_code", code}, {"message", message}};
  }
  static Reply NotFound(const std::string& what) {
    return {404, Error("RESOURCE_DOES_NOT_EXIST", what + " not found")};
  }
  static Reply Invalid(const std::string& what) {
    return {400, Error("INVALID_PARAMETER_VALUE", what)};
  }
  nlohmann::json RunJson(const Run& run) const {
    return {{"run",
             {{"info",
               {{"run_id", run.id},
                {"experiment_id", run.experiment_id},
                {"run_name", run.name},
                {"status", run.status},
                {"artifact_uri",
                 artifact_root_ + run.experiment_id + "/" + run.id + "/artifacts"}}}}}};
  }

  template <typename F>
  void Handle(httplib::Response& res, F handler) {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_;
    Reply reply{0, nullptr};
    if (fail_calls_ > 0) {
      --fail_calls_;
      ++failed_requests_;
      reply = {fail_status_, Error("TEMPORARILY_UNAVAILABLE", "try later")};
    } else {
      reply = handler();
    }
    res.status = reply.status;
    res.set_content(reply.body.dump(), "application/json");
  }

  void Post(const std::string& call, std::function<Reply(const nlohmann::json&)> handler) {
    server_.Post("/api/2.0/mlflow/" + call,
                 [this, handler](const httplib::Request& req, httplib::Response& res) {
                   Handle(res, [&]() -> Reply {
                     nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
                     if (!body.is_object()) return Invalid("body is not JSON");
                     return handler(body);
                   });
                 });
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::map<std::string, std::string> experiments_;
  std::map<std::string, Run> runs_;
  std::map<std::string, std::string> artifacts_;
  std::set<std::string> authorizations_;
  std::string artifact_root_ = "mlflow-artifacts:/";
  int fail_calls_ = 0, fail_status_ = 503;
  int requests_ = 0, failed_requests_ = 0, log_batches_ = 0;
};

}  // namespace fedsilo::testing_util

#endif  // FEDSILO_TESTS_FAKE_MLFLOW_H_
