// fedsilo-bench: performance measurements, one subcommand per benchmark. With
// --json each prints its figures as one JSON object on its last line.
//
//   fedsilo-bench aggregate   FedAvg throughput against memcpy on the same machine
//   fedsilo-bench transport   rounds over gRPC + mutual TLS with silo processes that
//                             return the model unchanged (no training), against
//                             pushing the same bytes through bare TLS connections
//   fedsilo-bench dp-step     DP-SGD step time against SGD (2NN, CNN)
//   fedsilo-bench sandbox     local training rounds of a TorchScript module in its
//                             sandbox against loaded in the process (digits, MNIST CNN)
//   fedsilo-bench store       the job store recording a long run and reading its
//                             metrics back, plain and with sealed values
//   fedsilo-bench psi         private set intersection among K parties of N ids
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "core/allocator.h"
#include "core/subprocess.h"
#include "dp_step.h"
#include "orchestrator/orchestrator.h"
#include "orchestrator/silo_registry.h"
#include "psi_bench.h"
#include "sandbox_bench.h"
#include "secure/provisioner.h"
#include "secure/secagg.h"
#include "store_bench.h"
#include "strategy/fed_avg.h"
#include "tls_push.h"
#include "transport/orchestrator_service.h"
#include "transport/silo_client.h"
#include "transport/tls.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct AggregateOptions {
  int updates = 10;
  int64_t values = 10'000'000;
  int repeats = 5;
  int fold_batch = 4;
  bool json = false;
};

// Times FedAvg over `updates` updates of `values` float32 each (BeginRound
// excluded; Accumulate of every update plus Finish included), and memcpy of one
// update-sized buffer, both best of `repeats`. Aggregation rate counts all
// update bytes; copy rate counts the bytes copied.
int RunAggregate(const AggregateOptions& o) {
  using fedsilo::ModelState;
  using fedsilo::Tensor;
  const size_t n = static_cast<size_t>(o.values);
  const double update_bytes = static_cast<double>(n) * sizeof(float);
  std::printf("aggregate: FedAvg of %d updates x %lld float32 values (%.1f MB each), best of %d\n",
              o.updates, static_cast<long long>(o.values), update_bytes / 1e6, o.repeats);

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = dist(rng);
  ModelState global;
  (void)global.Add(Tensor::FromFloats("w", {o.values}, values));
  std::vector<ModelState> updates(static_cast<size_t>(o.updates));
  for (int i = 0; i < o.updates; ++i) {
    for (size_t j = 0; j < n; j += 4096) values[j] = dist(rng);  // make each update distinct
    (void)updates[i].Add(Tensor::FromFloats("w", {o.values}, values));
  }

  // The updates stay resident across repetitions: FedAvg hands them back
  // through TakeFolded(), so no repetition pays for allocating or freeing them.
  fedsilo::strategy::FedAvg fed_avg(1.0, o.fold_batch);
  double best_aggregate = 1e30;
  for (int r = 0; r < o.repeats; ++r) {
    if (!fed_avg.BeginRound(global).ok()) return 1;
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < o.updates; ++i) {
      if (!fed_avg.Accumulate(std::move(updates[i]), 100.0 + i).ok()) return 1;
    }
    auto next = fed_avg.Finish();
    const Clock::time_point end = Clock::now();
    if (!next.ok()) return 1;
    best_aggregate = std::min(best_aggregate, Seconds(start, end));
    updates = fed_avg.TakeFolded();  // in the order they were accumulated
    if (static_cast<int>(updates.size()) != o.updates) return 1;
  }

  std::vector<float> src(values), dst(n, 0.0f);
  double best_copy = 1e30;
  for (int r = 0; r < std::max(o.repeats, 5); ++r) {
    const Clock::time_point start = Clock::now();
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    const Clock::time_point end = Clock::now();
    best_copy = std::min(best_copy, Seconds(start, end));
  }
  // Keep the copy from being optimised away.
  if (dst[n / 2] != src[n / 2]) return 1;

  const double aggregate_rate = update_bytes * o.updates / best_aggregate;
  const double copy_rate = update_bytes / best_copy;
  const double ratio = aggregate_rate / copy_rate;
  std::printf("  aggregation  %8.3f s   %6.2f GB/s of updates\n", best_aggregate,
              aggregate_rate / 1e9);
  std::printf("  memcpy       %8.3f s   %6.2f GB/s\n", best_copy, copy_rate / 1e9);
  std::printf("  ratio (aggregation rate / copy rate)  %.2f\n", ratio);
  if (o.json) {
    nlohmann::json j = {{"benchmark", "aggregate"},
                        {"updates", o.updates},
                        {"values", o.values},
                        {"fold_batch", o.fold_batch},
                        {"aggregate_seconds", best_aggregate},
                        {"aggregate_gb_per_s", aggregate_rate / 1e9},
                        {"memcpy_seconds", best_copy},
                        {"memcpy_gb_per_s", copy_rate / 1e9},
                        {"ratio", ratio}};
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

// A silo that answers every task with the model it received (no training),
// or, with secure aggregation, masks it.
class EchoSilo : public fedsilo::transport::SiloHandler {
 public:
  explicit EchoSilo(std::string name) : secagg_(std::move(name)) {}
  fedsilo::StatusOr<fedsilo::transport::FitReply> RunTask(
      const fedsilo::transport::TaskRequest& request) override {
    fedsilo::transport::FitReply reply;
    reply.update = *fedsilo::transport::ModelOf(request.task);
    reply.num_examples = 1;
    if (request.job->privacy.secure_aggregation.enabled) {
      secagg_.SetInput(request.run_id, request.round, std::move(reply.update), 1);
      reply.update = fedsilo::ModelState();
    }
    return reply;
  }
  fedsilo::StatusOr<std::string> SecureStep(
      const fedsilo::transport::SecureStepRequest& request) override {
    return secagg_.Handle(request.run_id, request.round, request.payload);
  }
  void SetIdentity(std::shared_ptr<const fedsilo::secure::SecAggIdentity> identity) {
    secagg_.SetIdentity(std::move(identity));
  }

 private:
  fedsilo::secure::SecAggSilo secagg_;
};

int RunEchoSilo(const std::string& kit_dir, const std::string& target) {
  auto kit = fedsilo::secure::LoadKit(kit_dir);
  if (!kit.ok()) return 2;
  auto files = fedsilo::transport::LoadTlsFiles(*kit);
  if (!files.ok()) return 2;
  EchoSilo echo(kit->name);
  auto identity =
      fedsilo::secure::SecAggIdentity::Create(files->cert_pem, files->key_pem, files->ca_pem);
  if (!identity.ok()) return 2;
  echo.SetIdentity(*std::move(identity));
  fedsilo::transport::SiloClientOptions options;
  options.target = target;
  fedsilo::transport::SiloClient client(fedsilo::transport::MakeChannelCredentials(*files), options,
                                        &echo);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread runner([&] { client.Run().IgnoreError(); });
  int sig = 0;
  sigwait(&signals, &sig);
  client.Stop();
  runner.join();
  return 0;
}

class NoEvaluation : public fedsilo::orchestrator::ModelEvaluator {
 public:
  fedsilo::StatusOr<std::map<std::string, double>> Evaluate(const fedsilo::ModelState&) override {
    return std::map<std::string, double>{};
  }
};

struct TransportOptions {
  int silos = 2;
  int64_t values = 1'000'000;
  int rounds = 3;
  bool json = false;
  // Also run the rounds with secure aggregation, on the same silo processes.
  bool secure = false;
};

double PeakRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Records each round's seconds, and whether every sampled silo succeeded.
struct RoundTimes : fedsilo::orchestrator::RoundObserver {
  fedsilo::Status OnRoundEnd(const fedsilo::orchestrator::RoundSummary& s,
                             const fedsilo::ModelState&, int) override {
    seconds.push_back(s.round_seconds);
    ok = ok && s.silos_succeeded == s.silos_sampled;
    return absl::OkStatus();
  }
  std::vector<double> seconds;
  bool ok = true;
};

// The figures RunTransport reports.
struct TransportFigures {
  double model_mb = 0;
  double rss_before_mb = 0;  // orchestrator peak memory before the rounds
  double peak_mb = 0;        // and after the plain ones
  double median = 0;         // seconds per plain round
  double secure_median = 0;  // seconds per secure round (--secure)
  double baseline = 0;       // seconds of one bare TLS push
};

double Median(std::vector<double> seconds) {
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

// Provisions a federation of `o.silos` silos under `dir` and fills in
// `job`, the rounds they run. False (reported) when provisioning fails.
bool ProvisionTransportFederation(const TransportOptions& o, const std::string& dir,
                                  fedsilo::JobConfig* job) {
  fedsilo::secure::FederationSpec spec;
  spec.name = "bench";
  job->data.dataset = "digits";  // named only: the echo silos load no data
  job->training.rounds = o.rounds;
  job->federation.round_timeout = 600;
  for (int i = 1; i <= o.silos; ++i) {
    const std::string name = "silo-" + std::to_string(i);
    spec.participants.push_back({name, fedsilo::secure::ParticipantKind::kSilo});
    job->federation.silos.push_back(name);
  }
  if (fedsilo::Status s =
          fedsilo::secure::ProvisionFederation(spec, dir, std::chrono::system_clock::now());
      !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return false;
  }
  return true;
}

// Starts one echo-silo process per silo of `job`, each with its kit under
// `dir`, and adds their pids to `children`. False when one fails to start
// (those already started are left in `children`, still running).
bool SpawnEchoSilos(const fedsilo::JobConfig& job, const std::string& dir,
                    const std::string& target, std::vector<pid_t>* children) {
  for (const std::string& name : job.federation.silos) {
    auto pid = fedsilo::SpawnProcess(
        "/proc/self/exe",
        {"fedsilo-bench", "echo-silo", "--kit", dir + "/" + name, "--orchestrator", target}, "");
    if (!pid.ok()) return false;
    children->push_back(*pid);
  }
  return true;
}

// A model of `values` float32, with nothing else left allocated.
fedsilo::ModelState TransportModel(int64_t values) {
  fedsilo::ModelState model;
  std::vector<float> floats(static_cast<size_t>(values), 0.001f);
  (void)model.Add(fedsilo::Tensor::FromFloats("w", {values}, floats));
  floats = {};
  floats.shrink_to_fit();
  return model;
}

std::vector<std::unique_ptr<fedsilo::transport::SiloConnection>> ConnectSilos(
    const fedsilo::JobConfig& job, fedsilo::transport::OrchestratorService* service) {
  std::vector<std::unique_ptr<fedsilo::transport::SiloConnection>> connections;
  for (const std::string& name : job.federation.silos) {
    connections.push_back(std::make_unique<fedsilo::transport::RemoteSiloConnection>(
        name, service, std::chrono::seconds(600)));
  }
  return connections;
}

// The rounds of `job` again with secure aggregation from `model`, on the
// same silo processes, their keys signed as in a real federation.
fedsilo::Status RunSecureRounds(const TransportOptions& o, const fedsilo::JobConfig& job,
                                const std::string& ca_pem,
                                fedsilo::transport::OrchestratorService* service,
                                fedsilo::orchestrator::ModelEvaluator* evaluator,
                                fedsilo::ModelState model, RoundTimes* times) {
  fedsilo::JobConfig secure_job = job;
  secure_job.privacy.secure_aggregation.enabled = true;
  secure_job.privacy.secure_aggregation.max_weight = 1;
  fedsilo::orchestrator::OrchestratorOptions secure_options{"bench-secure", o.silos};
  secure_options.federation_ca_pem = ca_pem;
  fedsilo::orchestrator::Orchestrator secure_orch(
      secure_job, secure_options, ConnectSilos(job, service),
      std::make_unique<fedsilo::strategy::FedAvg>(), evaluator, nullptr);
  return secure_orch.Run(std::move(model), times).status();
}

void PrintTransportFigures(const TransportOptions& o, const TransportFigures& f) {
  const double moved_mb = 2.0 * o.silos * f.model_mb;
  std::printf(
      "transport: %d silo processes, model of %lld float32 (%.1f MB), %d rounds, mutual TLS "
      "on 127.0.0.1\n",
      o.silos, static_cast<long long>(o.values), f.model_mb, o.rounds);
  std::printf("  seconds per round (median)   %.3f\n", f.median);
  std::printf("  effective transfer rate      %.1f MB/s (%.1f MB moved per round)\n",
              moved_mb / f.median, moved_mb);
  std::printf("  bare TLS push of the same bytes %.3f s (%.1f MB/s); round / push = %.2f\n",
              f.baseline, moved_mb / f.baseline, f.median / f.baseline);
  std::printf("  orchestrator peak memory     %.0f MB (%.1f models; %.0f MB before the rounds)\n",
              f.peak_mb, f.peak_mb / f.model_mb, f.rss_before_mb);
  if (o.secure) {
    std::printf("  with secure aggregation      %.3f s per round (median); secure / plain = %.2f\n",
                f.secure_median, f.secure_median / f.median);
  }
  if (o.json) {
    nlohmann::json j = {{"benchmark", "transport"},
                        {"silos", o.silos},
                        {"values", o.values},
                        {"rounds", o.rounds},
                        {"seconds_per_round", f.median},
                        {"mb_per_s", moved_mb / f.median},
                        {"peak_rss_mb", f.peak_mb},
                        {"peak_rss_models", f.peak_mb / f.model_mb},
                        {"tls_push_seconds", f.baseline},
                        {"ratio_to_tls_push", f.median / f.baseline}};
    if (o.secure) {
      j["secure_seconds_per_round"] = f.secure_median;
      j["secure_ratio"] = f.secure_median / f.median;
    }
    std::printf("%s\n", j.dump().c_str());
  }
}

// Rounds of FedAvg over gRPC + mutual TLS on 127.0.0.1 with `silos` echo-silo
// processes. Seconds per round are the median; bytes moved count the model
// down to and the update up from every silo.
int RunTransport(const TransportOptions& o) {
  namespace fs = std::filesystem;
  using namespace fedsilo;
  spdlog::set_level(spdlog::level::warn);
  const std::string dir = fs::temp_directory_path() / ("fedsilo-bench-" + std::to_string(getpid()));
  fs::remove_all(dir);
  JobConfig job;
  if (!ProvisionTransportFederation(o, dir, &job)) return 1;
  auto files = transport::LoadTlsFiles(*secure::LoadKit(dir + "/orchestrator"));
  orchestrator::SiloRegistry registry;
  transport::OrchestratorService service(files->ca_pem, &registry,
                                         [] { return std::chrono::system_clock::now(); });
  auto server = transport::GrpcServer::Start("127.0.0.1:0",
                                             transport::MakeServerCredentials(*files), {&service});
  if (!server.ok()) return 1;
  const std::string target = "localhost:" + std::to_string((*server)->port());
  std::vector<pid_t> children;
  if (!SpawnEchoSilos(job, dir, target, &children)) return 1;
  auto cleanup = [&] {
    for (pid_t pid : children) StopProcess(pid, SIGTERM, std::chrono::seconds(5));
    fs::remove_all(dir);
  };
  while (service.ConnectedSilos().size() < static_cast<size_t>(o.silos)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  TransportFigures figures;
  ModelState model = TransportModel(o.values);
  figures.model_mb = static_cast<double>(o.values) * 4 / 1e6;
  std::vector<std::unique_ptr<transport::SiloConnection>> connections = ConnectSilos(job, &service);
  NoEvaluation none;
  RoundTimes times;
  figures.rss_before_mb = PeakRssMb();
  // With --secure, the same rounds again with secure aggregation, from the
  // same model, on the same silo processes.
  RoundTimes secure_times;
  Status secure_status;
  ModelState secure_model = model;
  orchestrator::Orchestrator orch(job, {"bench", o.silos}, std::move(connections),
                                  std::make_unique<strategy::FedAvg>(), &none, nullptr);
  auto result = orch.Run(std::move(model), &times);
  figures.peak_mb = PeakRssMb();
  if (o.secure && result.ok()) {
    secure_status = RunSecureRounds(o, job, files->ca_pem, &service, &none, std::move(secure_model),
                                    &secure_times);
  }
  secure_model = ModelState();
  // The baseline: the same bytes down and up through bare TLS connections.
  std::vector<std::string> kits;
  for (const std::string& name : job.federation.silos) kits.push_back(dir + "/" + name);
  auto push = bench::MeasureTlsPush(dir + "/orchestrator", kits,
                                    static_cast<uint64_t>(o.values) * 4, o.rounds);
  cleanup();
  if (!push.ok()) {
    std::fprintf(stderr, "TLS baseline failed: %s\n", std::string(push.status().message()).c_str());
    return 1;
  }
  figures.baseline = Median(*push);
  if (!result.ok() || !times.ok) {
    std::fprintf(stderr, "transport benchmark failed: %s\n",
                 result.ok() ? "a silo failed" : std::string(result.status().message()).c_str());
    return 1;
  }
  if (!secure_status.ok() || !secure_times.ok) {
    std::fprintf(
        stderr, "secure rounds failed: %s\n",
        secure_status.ok() ? "a silo failed" : std::string(secure_status.message()).c_str());
    return 1;
  }
  figures.median = Median(times.seconds);
  if (o.secure) figures.secure_median = Median(secure_times.seconds);
  PrintTransportFigures(o, figures);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  fedsilo::TuneAllocatorForModels();
  CLI::App app{"fedsilo-bench: fedsilo's performance benchmarks"};
  app.require_subcommand(1);
  AggregateOptions agg;
  CLI::App* aggregate =
      app.add_subcommand("aggregate", "FedAvg aggregation throughput, compared with memcpy");
  aggregate->add_option("--updates", agg.updates, "Number of updates")->check(CLI::Range(1, 1000));
  aggregate->add_option("--values", agg.values, "float32 values per update")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 31));
  aggregate->add_option("--repeats", agg.repeats, "Repetitions; the best is reported")
      ->check(CLI::Range(1, 1000));
  aggregate->add_option("--fold-batch", agg.fold_batch, "Updates folded per pass")
      ->check(CLI::Range(1, 64));
  aggregate->add_flag("--json", agg.json, "Print a JSON summary as the last line");

  TransportOptions tr;
  CLI::App* transport_cmd = app.add_subcommand(
      "transport", "Rounds over gRPC + mutual TLS with silo processes that do not train");
  transport_cmd->add_option("--silos", tr.silos, "Silo processes")->check(CLI::Range(1, 100));
  transport_cmd->add_option("--values", tr.values, "float32 values in the model")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  transport_cmd->add_option("--rounds", tr.rounds, "Rounds; the median is reported")
      ->check(CLI::Range(1, 1000));
  transport_cmd->add_flag("--json", tr.json, "Print a JSON summary as the last line");
  transport_cmd->add_flag("--secure", tr.secure,
                          "Also run the rounds with secure aggregation and print the ratio");

  fedsilo::bench::DpStepOptions dps;
  CLI::App* dp_step =
      app.add_subcommand("dp-step", "DP-SGD step time against SGD, 2NN and CNN on MNIST shapes");
  dp_step->add_option("--batch-size", dps.batch_size, "Examples per step")
      ->check(CLI::Range(1, 4096));
  dp_step->add_option("--steps", dps.steps, "Steps per measurement")->check(CLI::Range(1, 100000));
  dp_step->add_flag("--json", dps.json, "Print a JSON summary as the last line");

  std::string kit, target;
  fedsilo::bench::SandboxBenchOptions sbo;
  CLI::App* sandbox_cmd = app.add_subcommand(
      "sandbox", "Local training rounds of a TorchScript module sandboxed against in-process");
  sandbox_cmd->add_option("--rounds", sbo.rounds, "Rounds timed per model and mode")
      ->check(CLI::Range(1, 1000));
  sandbox_cmd->add_option("--mnist-examples", sbo.mnist_examples, "The MNIST silo's examples")
      ->check(CLI::Range(100, 60000));
  sandbox_cmd->add_option("--data-dir", sbo.data_dir, "The built-in data sets");
  sandbox_cmd->add_flag("--json", sbo.json, "Print a JSON summary as the last line");

  fedsilo::bench::StoreBenchOptions sto;
  CLI::App* store_cmd = app.add_subcommand(
      "store", "The job store recording a long run, plain and with sealed values");
  store_cmd->add_option("--rounds", sto.rounds, "Rounds recorded")->check(CLI::Range(1, 100000));
  store_cmd->add_option("--silos", sto.silos, "Silos reporting each round")
      ->check(CLI::Range(1, 1000));
  store_cmd->add_flag("--json", sto.json, "Print a JSON summary as the last line");

  fedsilo::bench::PsiBenchOptions psi;
  CLI::App* psi_cmd =
      app.add_subcommand("psi", "Private set intersection among K parties of N ids each");
  psi_cmd->add_option("--ids", psi.ids, "Ids per party")->check(CLI::Range(1, 10000000));
  psi_cmd->add_option("--parties", psi.parties, "Parties")->check(CLI::Range(2, 16));
  psi_cmd->add_option("--overlap", psi.overlap, "The share of ids every party holds")
      ->check(CLI::Range(0.0, 1.0));
  psi_cmd->add_flag("--json", psi.json, "Print a JSON summary as the last line");

  CLI::App* echo = app.add_subcommand("echo-silo", "(internal) a silo that returns the model");
  echo->add_option("--kit", kit)->required();
  echo->add_option("--orchestrator", target)->required();
  echo->group("");
  int push_port = 0, push_repeats = 1;
  uint64_t push_bytes = 0;
  CLI::App* push_client =
      app.add_subcommand("tls-push-client", "(internal) the TLS baseline's client");
  push_client->add_option("--kit", kit)->required();
  push_client->add_option("--port", push_port)->required();
  push_client->add_option("--bytes", push_bytes)->required();
  push_client->add_option("--repeats", push_repeats)->required();
  push_client->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*aggregate) return RunAggregate(agg);
  if (*transport_cmd) return RunTransport(tr);
  if (*dp_step) return fedsilo::bench::RunDpStep(dps);
  if (*sandbox_cmd) return fedsilo::bench::RunSandboxBench(sbo);
  if (*store_cmd) return fedsilo::bench::RunStoreBench(sto);
  if (*psi_cmd) return fedsilo::bench::RunPsiBench(psi);
  if (*echo) return RunEchoSilo(kit, target);
  if (*push_client)
    return fedsilo::bench::RunTlsPushClient(kit, push_port, push_bytes, push_repeats);
  return 2;
}
