#include "orchestrator/dashboard.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "orchestrator/run_views.h"
#include "orchestrator/web_assets.h"

namespace fedsilo::orchestrator {
namespace {

void SendJson(httplib::Response& res, const StatusOr<std::string>& body) {
  res.set_header("Cache-Control", "no-store");
  if (body.ok()) {
    res.set_content(*body, "application/json");
    return;
  }
  res.status = IsInvalidInput(body.status()) ? 404 : 500;
  res.set_content(nlohmann::json({{"error", std::string(body.status().message())}}).dump(),
                  "application/json");
}

}  // namespace

StatusOr<std::unique_ptr<DashboardServer>> DashboardServer::Start(JobStore* store,
                                                                  const std::string& host,
                                                                  int port) {
  auto dashboard = std::unique_ptr<DashboardServer>(new DashboardServer());
  dashboard->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *dashboard->server_;

  for (size_t i = 0; i < kWebAssetCount; ++i) {
    const WebAsset& asset = kWebAssets[i];
    const std::string pattern = std::string(asset.path) == "/index.html" ? "/" : asset.path;
    server.Get(pattern, [&asset](const httplib::Request&, httplib::Response& res) {
      res.set_content(reinterpret_cast<const char*>(asset.data), asset.size, asset.content_type);
    });
  }
  server.Get("/api/info", [store](const httplib::Request&, httplib::Response& res) {
    SendJson(res, nlohmann::json({{"source", store->path()}}).dump());
  });
  server.Get("/api/runs", [store](const httplib::Request& req, httplib::Response& res) {
    SendJson(res, RunListJson(*store, req.get_param_value("experiment")));
  });
  server.Get(R"(/api/runs/([^/]+))", [store](const httplib::Request& req, httplib::Response& res) {
    StatusOr<JobRecord> run = FindRun(*store, req.matches[1]);
    SendJson(res, run.ok() ? RunDetailJson(*store, *run) : run.status());
  });
  server.Get(R"(/api/runs/([^/]+)/metrics)",
             [store](const httplib::Request& req, httplib::Response& res) {
               StatusOr<JobRecord> run = FindRun(*store, req.matches[1]);
               SendJson(res, run.ok() ? RunMetricsJson(*store, *run) : run.status());
             });

  int bound = -1;
  if (port == 0) {
    bound = server.bind_to_any_port(host);
  } else if (server.bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("dashboard: cannot listen on ", host, ":", port,
                                               " (in use, or no such address)"));
  }
  dashboard->port_ = bound;
  dashboard->thread_ = std::thread([&server] { server.listen_after_bind(); });
  // listen_after_bind() flips is_running() once it accepts.
  for (int i = 0; i < 200 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return dashboard;
}

DashboardServer::~DashboardServer() { Stop(); }

void DashboardServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fedsilo::orchestrator
