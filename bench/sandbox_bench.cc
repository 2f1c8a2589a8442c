#include "sandbox_bench.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ml/dataset_catalog.h"
#include "ml/model.h"
#include "ml/partitioner.h"
#include "ml/sandbox.h"
#include "ml/scripted_module.h"
#include "ml/torchscript_check.h"

namespace fedsilo::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// McMahan et al.'s CNN (as model.name: cnn) written as a TorchScript module.
std::string WriteMnistCnn(const std::string& path) {
  ml::ScriptedModule m;
  m.parameters = {{"c1_w", {32, 1, 5, 5}}, {"c1_b", {32}},        {"c2_w", {64, 32, 5, 5}},
                  {"c2_b", {64}},          {"f1_w", {512, 3136}}, {"f1_b", {512}},
                  {"f2_w", {10, 512}},     {"f2_b", {10}}};
  m.methods =
      "def forward(self, x):\n"
      "    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.c1_w, self.c1_b, 1, 2)), 2)\n"
      "    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.c2_w, self.c2_b, 1, 2)), 2)\n"
      "    x = torch.relu(torch.linear(torch.flatten(x, 1), self.f1_w, self.f1_b))\n"
      "    return torch.linear(x, self.f2_w, self.f2_b)\n";
  (void)ml::WriteScriptedModule(m, path);
  return path;
}

struct Timing {
  double start_seconds = 0;  // Create (and for the sandbox: starting its worker)
  double round_seconds = 0;  // mean of the timed rounds
};

// Rounds as a silo runs them: the global model in, local training, the
// update out. The first round (data sent to the worker) is timed apart.
Timing TimeRounds(std::unique_ptr<ml::Model> model, double start, const ml::DataView& data,
                  const TrainingConfig& config, int rounds, double* first) {
  Timing t;
  t.start_seconds = start;
  const ModelState global = model->GetState();
  for (int r = 0; r <= rounds; ++r) {
    const auto a = Clock::now();
    if (!model->SetState(global).ok()) return {};
    auto stats = model->Train(data, config, static_cast<uint64_t>(r));
    if (!stats.ok()) {
      std::fprintf(stderr, "sandbox: %s\n", std::string(stats.status().message()).c_str());
      return {};
    }
    (void)model->GetState();
    const double s = Seconds(a, Clock::now());
    if (r == 0) {
      *first = s;
    } else {
      t.round_seconds += s / rounds;
    }
  }
  return t;
}

}  // namespace

int RunSandboxBench(const SandboxBenchOptions& o) {
  const std::string data_dir = o.data_dir.empty() ? ml::DefaultDataDir() : o.data_dir;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  ml::Sandbox sandbox;
  sandbox.program =
      (std::filesystem::path(std::string(exe, n > 0 ? static_cast<size_t>(n) : 0)).parent_path() /
       "fedsilo")
          .string();
  std::printf(
      "sandbox: local training rounds, module in its sandbox (%s sandbox-worker) against "
      "loaded in this process; %d rounds each, one thread\n",
      sandbox.program.c_str(), o.rounds);
  nlohmann::json out = {{"benchmark", "sandbox"}, {"rounds", o.rounds}};
  struct Case {
    std::string name, dataset, module;
    std::vector<int64_t> shape;
    int64_t examples;
    TrainingConfig config;
  };
  TrainingConfig digits_config;  // examples/torchscript/digits.yaml
  digits_config.local_epochs = 2;
  digits_config.batch_size = 16;
  digits_config.learning_rate = 0.05;
  digits_config.momentum = 0.9;
  TrainingConfig cnn_config;  // examples/mnist-cnn-noniid.yaml
  cnn_config.local_epochs = 1;
  cnn_config.batch_size = 32;
  cnn_config.learning_rate = 0.05;
  const std::string cnn = WriteMnistCnn(
      (std::filesystem::temp_directory_path() / "fedsilo-bench-mnist-cnn.pt").string());
  const std::vector<Case> cases = {
      {"digits",
       "digits",
       std::string(FEDSILO_BENCH_SOURCE_DIR) + "/examples/torchscript/digits_net.pt",
       {64},
       288,
       digits_config},
      {"mnist_cnn", "mnist", cnn, {1, 28, 28}, o.mnist_examples, cnn_config}};
  for (const Case& c : cases) {
    auto data = ml::LoadBuiltinDataset(c.dataset, data_dir, 0.2, 1);
    if (!data.ok()) {
      std::fprintf(stderr, "sandbox: %s\n", std::string(data.status().message()).c_str());
      return 2;
    }
    ml::DataView share = ml::DataView::All(data->train);
    share.indices.resize(static_cast<size_t>(std::min<int64_t>(c.examples, share.size())));
    ml::ModelSpec spec;
    spec.config.kind = ModelKind::kTorchScript;
    spec.config.torchscript = c.module;
    spec.input_shape = c.shape;
    spec.num_classes = 10;

    auto a = Clock::now();
    std::vector<ml::RefusedOp> refused;
    auto here = ml::Model::LoadTorchScriptHere(FileBytes(c.module), spec, true, &refused);
    if (!here.ok()) {
      std::fprintf(stderr, "sandbox: %s\n", std::string(here.status().message()).c_str());
      return 1;
    }
    double first_here = 0, first_sandboxed = 0;
    const Timing in_process = TimeRounds(std::move(here).value(), Seconds(a, Clock::now()), share,
                                         c.config, o.rounds, &first_here);
    a = Clock::now();
    auto boxed = ml::Model::Create(spec, 1, &sandbox);
    if (!boxed.ok()) {
      std::fprintf(stderr, "sandbox: %s\n", std::string(boxed.status().message()).c_str());
      return 1;
    }
    const Timing sandboxed = TimeRounds(std::move(boxed).value(), Seconds(a, Clock::now()), share,
                                        c.config, o.rounds, &first_sandboxed);
    if (in_process.round_seconds <= 0 || sandboxed.round_seconds <= 0) return 1;
    const double overhead = sandboxed.round_seconds / in_process.round_seconds - 1;
    std::printf(
        "  %-9s %5lld examples: round %8.1f ms in process, %8.1f ms sandboxed (%+.1f %%); "
        "worker start %.0f ms, first round %.0f ms (data sent)\n",
        c.name.c_str(), static_cast<long long>(share.size()), in_process.round_seconds * 1e3,
        sandboxed.round_seconds * 1e3, overhead * 100, sandboxed.start_seconds * 1e3,
        first_sandboxed * 1e3);
    out[c.name] = {{"examples", share.size()},
                   {"round_ms_in_process", in_process.round_seconds * 1e3},
                   {"round_ms_sandboxed", sandboxed.round_seconds * 1e3},
                   {"overhead_fraction", overhead},
                   {"worker_start_ms", sandboxed.start_seconds * 1e3},
                   {"first_round_ms_sandboxed", first_sandboxed * 1e3},
                   {"first_round_ms_in_process", first_here * 1e3}};
  }
  if (o.json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace fedsilo::bench
