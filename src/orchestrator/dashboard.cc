#include "orchestrator/dashboard.h"

#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <algorithm>
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

// PEM text -> OpenSSL objects, for httplib's SSLServer.
struct TlsObjects {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  X509_STORE* ca = nullptr;
};

StatusOr<TlsObjects> LoadTlsObjects(const transport::TlsFiles& files) {
  auto bio = [](const std::string& pem) {
    return std::unique_ptr<BIO, decltype(&BIO_free)>(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  };
  TlsObjects out;
  out.cert = PEM_read_bio_X509(bio(files.cert_pem).get(), nullptr, nullptr, nullptr);
  out.key = PEM_read_bio_PrivateKey(bio(files.key_pem).get(), nullptr, nullptr, nullptr);
  X509* ca = PEM_read_bio_X509(bio(files.ca_pem).get(), nullptr, nullptr, nullptr);
  if (out.cert == nullptr || out.key == nullptr || ca == nullptr) {
    X509_free(out.cert);
    EVP_PKEY_free(out.key);
    X509_free(ca);
    return absl::InvalidArgumentError("dashboard: the kit's certificate, key or CA does not parse");
  }
  out.ca = X509_STORE_new();
  X509_STORE_add_cert(out.ca, ca);
  X509_free(ca);
  return out;
}

// The verified identity of the caller of an HTTPS request.
StatusOr<secure::PeerIdentity> Caller(const httplib::Request& req,
                                      const DashboardOptions& options) {
  if (req.ssl == nullptr) return absl::UnauthenticatedError("no TLS session");
  X509* cert = SSL_get1_peer_certificate(req.ssl);
  if (cert == nullptr) return absl::UnauthenticatedError("no client certificate");
  std::unique_ptr<BIO, decltype(&BIO_free)> out(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_X509(out.get(), cert);
  X509_free(cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  FEDSILO_ASSIGN_OR_RETURN(secure::PeerIdentity peer,
                           secure::VerifyCertificate(std::string(data, static_cast<size_t>(n)),
                                                     options.tls->ca_pem, options.clock()));
  if (options.revoked != nullptr) FEDSILO_RETURN_IF_ERROR(options.revoked->Check(peer));
  return peer;
}

}  // namespace

StatusOr<std::unique_ptr<DashboardServer>> DashboardServer::Start(JobStore* store,
                                                                  const DashboardOptions& options) {
  auto dashboard = std::unique_ptr<DashboardServer>(new DashboardServer());
  if (options.tls != nullptr) {
    FEDSILO_ASSIGN_OR_RETURN(TlsObjects tls, LoadTlsObjects(*options.tls));
    // The server takes the CA store; the certificate and key are copied.
    dashboard->server_ = std::make_unique<httplib::SSLServer>(tls.cert, tls.key, tls.ca);
    X509_free(tls.cert);
    EVP_PKEY_free(tls.key);
    if (!dashboard->server_->is_valid()) {
      return absl::InvalidArgumentError(
          "dashboard: the kit's certificate and key do not make a TLS server (do they match?)");
    }
    const DashboardOptions auth = options;
    dashboard->server_->set_pre_routing_handler(
        [auth](const httplib::Request& req, httplib::Response& res) {
          StatusOr<secure::PeerIdentity> caller = Caller(req, auth);
          std::string refused;
          if (!caller.ok()) {
            refused = std::string(caller.status().message());
          } else if (std::find(auth.allowed.begin(), auth.allowed.end(), caller->kind) ==
                     auth.allowed.end()) {
            refused = absl::StrCat(secure::ParticipantKindName(caller->kind), " '", caller->name,
                                   "' may not use the dashboard (users only)");
          }
          if (refused.empty()) return httplib::Server::HandlerResponse::Unhandled;
          res.status = 403;
          res.set_content(nlohmann::json({{"error", refused}}).dump(), "application/json");
          return httplib::Server::HandlerResponse::Handled;
        });
  } else {
    dashboard->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *dashboard->server_;
  if (options.metrics) {
    server.Get("/metrics",
               [metrics = options.metrics](const httplib::Request&, httplib::Response& res) {
                 res.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
               });
  }

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
    StatusOr<std::vector<RunSummary>> runs = ListRuns(*store, req.get_param_value("experiment"));
    SendJson(res, runs.ok() ? StatusOr<std::string>(RunListJson(*runs)) : runs.status());
  });
  server.Get(R"(/api/runs/([^/]+))", [store](const httplib::Request& req, httplib::Response& res) {
    StatusOr<RunData> run = FindAndLoadRun(*store, req.matches[1]);
    SendJson(res, run.ok() ? StatusOr<std::string>(RunDetailJson(*run)) : run.status());
  });
  server.Get(
      R"(/api/runs/([^/]+)/metrics)", [store](const httplib::Request& req, httplib::Response& res) {
        StatusOr<JobRecord> run = FindRun(*store, req.matches[1]);
        if (!run.ok()) return SendJson(res, run.status());
        StatusOr<std::vector<MetricRow>> metrics = store->Metrics(run->id);
        SendJson(res,
                 metrics.ok() ? StatusOr<std::string>(RunMetricsJson(*metrics)) : metrics.status());
      });

  int bound = -1;
  if (options.port == 0) {
    bound = server.bind_to_any_port(options.host);
  } else if (server.bind_to_port(options.host, options.port)) {
    bound = options.port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("dashboard: cannot listen on ", options.host, ":",
                                               options.port, " (in use, or no such address)"));
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
