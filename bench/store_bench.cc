#include "store_bench.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "orchestrator/job_store.h"
#include "secure/storage_keys.h"
#include "store_workload.h"

namespace fedsilo::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct StoreFigures {
  double write_s = 0;      // all rounds recorded
  double open_s = 0;       // reopening the store
  double read_s = 0;       // every metric of the job read back
  double latest_s = 0;     // the latest value of each metric (the dashboard's table)
  uintmax_t bytes = 0;     // the file once closed
  size_t rows = 0;
};

// Runs the workload in a fresh folder; `sealer` null for a plain store.
StatusOr<StoreFigures> Measure(const StoreBenchOptions& o, const std::string& dir,
                               std::shared_ptr<const FileSealer> sealer) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/fedsilo.db";
  StoreFigures f;
  {
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store,
                             orchestrator::JobStore::Open(path, sealer));
    orchestrator::JobRecord job;
    job.name = "bench";
    job.owner = "bench";
    job.job_yaml = "name: bench\n";
    job.rounds_total = o.rounds;
    FEDSILO_ASSIGN_OR_RETURN(job, store->CreateJob(job));
    const Clock::time_point start = Clock::now();
    for (int r = 1; r <= o.rounds; ++r) {
      std::vector<orchestrator::MetricRow> rows;
      for (const StoreMetric& m : RoundMetrics(r, o.silos)) {
        rows.push_back({r, m.source, m.name, m.value, 1.7e9 + r});
      }
      FEDSILO_RETURN_IF_ERROR(store->CompleteRound(
          job.id, {r, 1.7e9 + r, 0.5, o.silos, o.silos, {}}, rows));
    }
    f.write_s = Since(start);
  }
  Clock::time_point start = Clock::now();
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<orchestrator::JobStore> store,
                           orchestrator::JobStore::Open(path, sealer));
  f.open_s = Since(start);
  start = Clock::now();
  FEDSILO_ASSIGN_OR_RETURN(std::vector<orchestrator::MetricRow> all, store->Metrics("job-1"));
  f.read_s = Since(start);
  f.rows = all.size();
  start = Clock::now();
  FEDSILO_ASSIGN_OR_RETURN(auto latest, store->LatestMetrics("job-1"));
  f.latest_s = Since(start);
  store.reset();
  f.bytes = std::filesystem::file_size(path);
  return f;
}

}  // namespace

int RunStoreBench(const StoreBenchOptions& o) {
  const std::string base = std::filesystem::temp_directory_path().string() + "/fedsilo-store-bench-" +
                           std::to_string(::getpid());
  StatusOr<StoreFigures> plain = Measure(o, base + "/plain", nullptr);
  StatusOr<StoreFigures> sealed = Measure(
      o, base + "/sealed", std::make_shared<secure::AeadFileSealer>(secure::NewKeyRing()));
  std::filesystem::remove_all(base);
  if (!plain.ok() || !sealed.ok()) {
    std::fprintf(stderr, "store bench: %s\n",
                 std::string((plain.ok() ? sealed.status() : plain.status()).message()).c_str());
    return 1;
  }
  std::printf("job store, %d rounds x %d silos (%zu metric rows), WAL + synchronous=FULL\n",
              o.rounds, o.silos, plain->rows);
  std::printf("  %-14s %10s %10s %10s %10s %10s\n", "", "write s", "ms/round", "read s",
              "latest s", "MB");
  auto line = [&](const char* name, const StoreFigures& f) {
    std::printf("  %-14s %10.3f %10.3f %10.3f %10.3f %10.2f\n", name, f.write_s,
                1000 * f.write_s / o.rounds, f.read_s, f.latest_s, f.bytes / 1e6);
  };
  line("plain", *plain);
  line("sealed values", *sealed);
  std::printf("  sealed/plain: write %.2fx, read %.2fx, size %.2fx\n",
              sealed->write_s / plain->write_s, sealed->read_s / plain->read_s,
              static_cast<double>(sealed->bytes) / plain->bytes);
  if (o.json) {
    auto j = [](const StoreFigures& f) {
      return nlohmann::json{{"write_s", f.write_s}, {"open_s", f.open_s}, {"read_s", f.read_s},
                            {"latest_s", f.latest_s}, {"bytes", f.bytes}, {"rows", f.rows}};
    };
    std::printf("%s\n", nlohmann::json{{"benchmark", "store"},
                                       {"rounds", o.rounds},
                                       {"silos", o.silos},
                                       {"plain", j(*plain)},
                                       {"sealed_values", j(*sealed)}}
                            .dump()
                            .c_str());
  }
  return 0;
}

}  // namespace fedsilo::bench
