// The MLflow exporter against a stand-in tracking server on 127.0.0.1
// (tests/fake_mlflow.h): what it sends, and how it rides out an outage, an
// unreachable server and a server that refuses it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

#include "fake_mlflow.h"
#include "tracking/mlflow_client.h"
#include "tracking/mlflow_exporter.h"

namespace fedsilo::tracking {
namespace {

using ::testing::HasSubstr;
using testing_util::FakeMlflow;
using namespace std::chrono_literals;

MlflowExportOptions Options(const std::string& uri) {
  MlflowExportOptions o;
  o.uri = uri;
  o.experiment = "lr-sweep";
  o.run_name = "digits-20261128-000000-abcd";
  o.tags = {{"fedsilo.run_id", o.run_name}};
  o.params = {{"training.rounds", "3"}, {"training.learning_rate", "0.05"}};
  o.first_retry = 20ms;
  o.max_retry = 100ms;
  o.batch_delay = 5ms;
  return o;
}

MetricRecord Metric(int round, const std::string& source, const std::string& metric, double value,
                    bool exportable = true) {
  return {round, source, source + "/" + metric, value, 1.8e9 + round, exportable};
}

TEST(MlflowExporterTest, SendsTheRunItsParamsMetricsArtifactsAndItsEnd) {
  FakeMlflow mlflow;
  MlflowExportOptions options = Options(mlflow.uri());
  for (int i = 0; i < 150; ++i) {  // more than one batch of params
    options.params.emplace_back("key" + std::to_string(i), std::string(i == 0 ? 700 : 1, 'v'));
  }
  std::string created;
  options.on_run_created = [&](const std::string& id) { created = id; };
  auto exporter = MlflowExporter::Start(options);
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  const int kRounds = 1300;  // 2600 metrics: three batches of at most 1000
  for (int round = 1; round <= kRounds; ++round) {
    EXPECT_TRUE((*exporter)->Record(Metric(round, "global", "test_accuracy", round / 2000.0)).ok());
    EXPECT_TRUE((*exporter)->Record(Metric(round, "silo-1", "train_loss", 1.0 / round)).ok());
    EXPECT_TRUE((*exporter)->Record(Metric(round, "silo-2", "train_loss", 0.5, false)).ok());
  }
  EXPECT_TRUE((*exporter)->Record(Metric(1, "global", "test_loss", std::nan(""))).ok());
  (*exporter)->AddArtifact("model/final_model.fsm", std::string("FSM\0bytes", 9));
  MlflowExportReport report = (*exporter)->Finish("FINISHED", 10s);

  EXPECT_TRUE(report.complete()) << report.metrics_unsent << " " << report.calls_unsent;
  EXPECT_EQ(report.metrics_sent, 2 * kRounds);
  EXPECT_EQ(report.metrics_private, kRounds);
  ASSERT_EQ(mlflow.experiments().count("lr-sweep"), 1u);
  auto runs = mlflow.runs();
  ASSERT_EQ(runs.size(), 1u);
  const FakeMlflow::Run& run = runs.begin()->second;
  EXPECT_EQ(run.id, report.run_id);
  EXPECT_EQ(run.id, created);
  EXPECT_EQ(run.name, options.run_name);
  EXPECT_EQ(run.tags.at("fedsilo.run_id"), options.run_name);
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_TRUE(run.ended);
  EXPECT_EQ(run.params.size(), options.params.size());
  EXPECT_EQ(run.params.at("training.learning_rate"), "0.05");
  EXPECT_EQ(run.params.at("key0").size(), MlflowClient::kMaxParamValue);  // cut to fit
  ASSERT_EQ(run.metrics.size(), 2u * kRounds);
  std::set<std::string> keys;
  for (const auto& m : run.metrics) {
    keys.insert(m.key);
    if (m.key == "global/test_accuracy") {
      EXPECT_DOUBLE_EQ(m.value, m.step / 2000.0);
      EXPECT_EQ(m.timestamp, static_cast<int64_t>((1.8e9 + m.step) * 1000));
    }
  }
  EXPECT_EQ(keys, (std::set<std::string>{"global/test_accuracy", "silo-1/train_loss"}));
  const auto artifacts = mlflow.artifacts();
  const std::string path = "1/" + run.id + "/artifacts/model/final_model.fsm";
  ASSERT_EQ(artifacts.count(path), 1u);
  EXPECT_EQ(artifacts.at(path), std::string("FSM\0bytes", 9));
}

TEST(MlflowExporterTest, AnOutageIsRiddenOutWithRetries) {
  FakeMlflow mlflow;
  mlflow.FailNext(5);  // the first five calls get 503
  auto exporter = MlflowExporter::Start(Options(mlflow.uri()));
  ASSERT_TRUE(exporter.ok());
  for (int round = 1; round <= 3; ++round) {
    EXPECT_TRUE((*exporter)->Record(Metric(round, "global", "test_accuracy", 0.1 * round)).ok());
  }
  MlflowExportReport report = (*exporter)->Finish("FINISHED", 10s);
  EXPECT_TRUE(report.complete());
  EXPECT_EQ(mlflow.failed_requests(), 5);
  auto runs = mlflow.runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs.begin()->second.metrics.size(), 3u);
  EXPECT_EQ(runs.begin()->second.params.size(), 2u);
  EXPECT_EQ(runs.begin()->second.status, "FINISHED");
}

TEST(MlflowExporterTest, AnUnreachableServerHoldsNothingUpAndWhatWasLeftIsReported) {
  std::string uri;
  {
    FakeMlflow gone;  // a port that was just free: nothing listens there now
    uri = gone.uri();
  }
  auto exporter = MlflowExporter::Start(Options(uri));
  ASSERT_TRUE(exporter.ok());
  for (int round = 1; round <= 50; ++round) {
    EXPECT_TRUE((*exporter)->Record(Metric(round, "global", "test_accuracy", 0.5)).ok());
  }
  MlflowExportReport report = (*exporter)->Finish("FINISHED", 300ms);
  EXPECT_FALSE(report.complete());
  EXPECT_TRUE(report.run_id.empty());
  EXPECT_EQ(report.metrics_sent, 0);
  EXPECT_EQ(report.metrics_unsent, 50);
  EXPECT_EQ(report.calls_unsent, 3);  // the run, its params, its end
}

TEST(MlflowExporterTest, ARefusedRunTurnsExportOffWithoutFailingAnything) {
  FakeMlflow mlflow;
  mlflow.FailNext(1, 403);  // e.g. no permission on the experiment
  auto exporter = MlflowExporter::Start(Options(mlflow.uri()));
  ASSERT_TRUE(exporter.ok());
  EXPECT_TRUE((*exporter)->Record(Metric(1, "global", "test_accuracy", 0.5)).ok());
  MlflowExportReport report = (*exporter)->Finish("FINISHED", 5s);
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_THAT(report.errors[0], HasSubstr("HTTP 403"));
  EXPECT_EQ(report.calls_unsent, 0);
  EXPECT_TRUE(mlflow.runs().empty());
  EXPECT_TRUE((*exporter)->Record(Metric(2, "global", "test_accuracy", 0.5)).ok());
}

TEST(MlflowExporterTest, AResumedJobContinuesItsMlflowRun) {
  FakeMlflow mlflow;
  std::string id;
  {
    MlflowExportOptions first = Options(mlflow.uri());
    first.on_run_created = [&](const std::string& created) { id = created; };
    auto exporter = MlflowExporter::Start(first);
    ASSERT_TRUE(exporter.ok());
    EXPECT_TRUE((*exporter)->Record(Metric(1, "global", "test_accuracy", 0.5)).ok());
    EXPECT_TRUE((*exporter)->Finish("", 5s).complete());  // interrupted: left running
  }
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(mlflow.runs().at(id).status, "RUNNING");
  MlflowExportOptions second = Options(mlflow.uri());
  second.resume_run_id = id;
  auto exporter = MlflowExporter::Start(second);
  ASSERT_TRUE(exporter.ok());
  EXPECT_TRUE((*exporter)->Record(Metric(2, "global", "test_accuracy", 0.75)).ok());
  EXPECT_TRUE((*exporter)->Finish("FINISHED", 5s).complete());
  auto runs = mlflow.runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs.at(id).metrics.size(), 2u);
  EXPECT_EQ(runs.at(id).status, "FINISHED");
}

TEST(MlflowClientTest, OnlyHttpAddressesAreAccepted) {
  for (const char* bad : {"mlflow.example.org", "ftp://host/", "http://", "http://:5000"}) {
    auto client = MlflowClient::Create(bad);
    EXPECT_FALSE(client.ok()) << bad;
    if (!client.ok()) {
      EXPECT_THAT(client.status().message(), HasSubstr("tracking.mlflow.uri"));
    }
  }
  EXPECT_TRUE(MlflowClient::Create("https://mlflow.example.org:8443/prefix/").ok());
}

// An outage is reported without flooding the log: a warning at the first
// failed call and at every tenth, and one line when the server answers again.
TEST(MlflowExporterTest, AnOutageWarnsAtTheFirstFailureAndEveryTenth) {
  auto lines = std::make_shared<std::ostringstream>();
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(*lines));
  spdlog::set_default_logger(logger);
  FakeMlflow mlflow;
  auto exporter = MlflowExporter::Start(Options(mlflow.uri()));
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  mlflow.FailNext(25);  // the next 25 calls: 503
  EXPECT_TRUE((*exporter)->Record(Metric(1, "global", "test_accuracy", 0.5)).ok());
  MlflowExportReport report = (*exporter)->Finish("FINISHED", 60s);
  spdlog::set_default_logger(previous);
  EXPECT_TRUE(report.complete()) << report.metrics_unsent << " " << report.calls_unsent;
  EXPECT_EQ(mlflow.failed_requests(), 25);
  const std::string log = lines->str();
  int warnings = 0;
  for (size_t at = log.find("trying again in"); at != std::string::npos;
       at = log.find("trying again in", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 3) << log;  // failures 1, 10 and 20
  EXPECT_THAT(log, HasSubstr("attempt 20)"));
  EXPECT_THAT(log, HasSubstr("answers again"));
}

// A server that hands out s3:// artifact locations (no artifact proxy) gets
// the metrics and parameters; the artifact is reported as not sent, naming
// the location and what to do.
TEST(MlflowExporterTest, ArtifactsOutsideTheProxyAreReportedAndTheRestIsSent) {
  FakeMlflow mlflow;
  mlflow.SetArtifactRoot("s3://bucket/mlruns/");
  auto exporter = MlflowExporter::Start(Options(mlflow.uri()));
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  EXPECT_TRUE((*exporter)->Record(Metric(1, "global", "test_accuracy", 0.5)).ok());
  (*exporter)->AddArtifact("model/final_model.fsm", "model bytes");
  MlflowExportReport report = (*exporter)->Finish("FINISHED", 10s);
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_THAT(report.errors[0], HasSubstr("artifacts go to 's3://bucket/mlruns/"));
  EXPECT_THAT(report.errors[0], HasSubstr("--serve-artifacts"));
  EXPECT_TRUE(mlflow.artifacts().empty());
  ASSERT_EQ(mlflow.runs().size(), 1u);
  const FakeMlflow::Run run = mlflow.runs().begin()->second;
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_EQ(run.metrics.size(), 1u);
  EXPECT_EQ(run.params.at("training.rounds"), "3");
}

// Credentials come from the environment MLflow's own clients read: a token
// first, else a user name and password; none when neither is set.
TEST(MlflowClientTest, CredentialsComeFromTheEnvironment) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string authorization;
  };
  const std::vector<Case> cases = {
      {{}, ""},
      {{{"MLFLOW_TRACKING_TOKEN", "t0k3n"}}, "Bearer t0k3n"},
      {{{"MLFLOW_TRACKING_USERNAME", "ann"}, {"MLFLOW_TRACKING_PASSWORD", "pw"}},
       "Basic YW5uOnB3"},  // base64("ann:pw")
      {{{"MLFLOW_TRACKING_TOKEN", "t0k3n"}, {"MLFLOW_TRACKING_USERNAME", "ann"}}, "Bearer t0k3n"},
  };
  const char* names[] = {"MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                         "MLFLOW_TRACKING_PASSWORD"};
  for (const Case& c : cases) {
    for (const char* n : names) ::unsetenv(n);
    for (const auto& [name, value] : c.env) ::setenv(name.c_str(), value.c_str(), 1);
    FakeMlflow mlflow;
    auto exporter = MlflowExporter::Start(Options(mlflow.uri()));
    ASSERT_TRUE(exporter.ok()) << exporter.status();
    EXPECT_TRUE((*exporter)->Record(Metric(1, "global", "test_accuracy", 0.5)).ok());
    EXPECT_TRUE((*exporter)->Finish("FINISHED", 10s).complete());
    EXPECT_EQ(mlflow.authorizations(), std::set<std::string>{c.authorization})
        << "expected '" << c.authorization << "'";
  }
  for (const char* n : names) ::unsetenv(n);
}

}  // namespace
}  // namespace fedsilo::tracking
