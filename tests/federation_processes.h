// A provisioned federation run as its users run it: `fedsilo orchestrator`
// and `fedsilo silo` child processes on 127.0.0.1, users acting through the
// CLI. Shared by the tests that drive the real federation.
#ifndef FEDSILO_TESTS_FEDERATION_PROCESSES_H_
#define FEDSILO_TESTS_FEDERATION_PROCESSES_H_

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/model_state_file.h"
#include "core/subprocess.h"
#include "test_util.h"

namespace fedsilo::testing_util {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline std::string Binary() { return FedsiloBinary(); }
inline std::string Read(const std::string& path) { return ReadAll(path); }

// A provisioned federation in a fresh folder: the orchestrator and silos as
// child processes, users acting through the CLI.
class Federation {
 public:
  // Silos a, b and c and users alice and bob, plus `extra` ("- {name: x,
  // kind: silo}" lines' name and kind).
  explicit Federation(const std::string& name,
                      const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    dir_ = ::testing::TempDir() + "/daemon_" + name;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ + "/federation.yaml")
        << "name: test-" << name << "\n"
        << "participants:\n"
        << "  - {name: a, kind: silo}\n  - {name: b, kind: silo}\n  - {name: c, kind: silo}\n"
        << "  - {name: alice, kind: user}\n  - {name: bob, kind: user}\n";
    {
      std::ofstream more(dir_ + "/federation.yaml", std::ios::app);
      for (const auto& [who, kind] : extra) {
        more << "  - {name: " << who << ", kind: " << kind << "}\n";
      }
    }
    std::ofstream(dir_ + "/datasets.yaml")
        << "datasets:\n  digits: {builtin: digits, share: job}\n";
    Output p = Run("provision " + dir_ + "/federation.yaml --out " + dir_ + "/kits");
    EXPECT_EQ(p.status, 0) << p.err;
  }
  ~Federation() { StopAll(); }

  // Kills every process it started (stopped ones too).
  void StopAll() {
    for (auto& [name, pid] : pids_) StopProcess(pid, SIGKILL, 0ms);
    pids_.clear();
  }

  // Starts the orchestrator on `port` (0: the OS chooses) and waits until it
  // serves. Returns false when it did not come up.
  bool StartOrchestrator(int port = 0, const std::vector<std::string>& extra = {}) {
    fs::remove(dir_ + "/state/endpoint");
    std::vector<std::string> args = {
        "fedsilo",     "orchestrator",  "--kit",    dir_ + "/kits/orchestrator",
        "--state-dir", dir_ + "/state", "--listen", "127.0.0.1:" + std::to_string(port)};
    args.insert(args.end(), extra.begin(), extra.end());
    auto pid = SpawnProcess(Binary(), args, dir_ + "/orchestrator.log");
    if (!pid.ok()) return false;
    pids_["orchestrator"] = *pid;
    // The endpoint file is its ready signal (written once it serves and has
    // printed its start-up lines). One that exits fails at once.
    std::string endpoint;
    WaitUntil([&] {
      endpoint = Read(dir_ + "/state/endpoint");
      return !endpoint.empty() || !Alive("orchestrator");
    });
    if (endpoint.empty()) return false;
    port_ = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
    return true;
  }

  // The port of the orchestrator's web endpoint (--http), once it wrote
  // state/http_endpoint (after the gRPC endpoint's); 0 when it did not.
  int HttpPort() const {
    std::string endpoint;
    WaitUntil([&] {
      endpoint = Read(dir_ + "/state/http_endpoint");
      return !endpoint.empty();
    });
    return endpoint.empty() ? 0 : std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  }

  // Points the silos started from now on at `port` on localhost (an
  // orchestrator endpoint the test runs itself).
  void UseOrchestratorAt(int port) { port_ = port; }

  // `extra` may name its own --datasets in place of the federation's.
  void StartSilo(const std::string& name, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"fedsilo",        "silo",
                                     "--kit",          dir_ + "/kits/" + name,
                                     "--orchestrator", "localhost:" + std::to_string(port_)};
    if (std::find(extra.begin(), extra.end(), "--datasets") == extra.end()) {
      args.insert(args.end(), {"--datasets", dir_ + "/datasets.yaml"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    // Its connection counts from here: a restarted silo's earlier ones are
    // already in the orchestrator's log.
    connections_before_[name] = CountInFile(dir_ + "/orchestrator.log", ConnectedLine(name));
    auto pid = SpawnProcess(Binary(), args, dir_ + "/" + name + ".log");
    ASSERT_TRUE(pid.ok()) << pid.status();
    pids_[name] = *pid;
  }

  // Waits until each of `names`, as last started, has connected to the
  // orchestrator process (its log says so). False when one did not in time.
  bool WaitConnected(const std::vector<std::string>& names) {
    for (const auto& n : names) {
      if (!WaitForText(dir_ + "/orchestrator.log", ConnectedLine(n), connections_before_[n])) {
        ADD_FAILURE() << "silo '" << n << "' did not connect:\n" << Read(dir_ + "/" + n + ".log");
        return false;
      }
    }
    return true;
  }

  // Sends `signal` to the process `name` and leaves it be (SIGSTOP, SIGCONT).
  void Signal(const std::string& name, int signal) {
    auto it = pids_.find(name);
    ASSERT_NE(it, pids_.end()) << name;
    ASSERT_EQ(::kill(it->second, signal), 0) << name;
  }

  // Whether the process `name` started is still running (not exited or killed).
  bool Alive(const std::string& name) {
    auto it = pids_.find(name);
    if (it == pids_.end()) return false;
    int status = 0;
    return waitpid(it->second, &status, WNOHANG) == 0;
  }

  void Kill(const std::string& name, int signal) {
    auto it = pids_.find(name);
    if (it == pids_.end()) return;
    StopProcess(it->second, signal, 10s);
    pids_.erase(it);
  }

  // Runs `fedsilo <args>`.
  Output Run(const std::string& args) const { return Fedsilo(args); }

  // A user command as `user`, against this federation's orchestrator.
  Output User(const std::string& command, const std::string& user = "alice") const {
    return Run(command + " --kit " + dir_ + "/kits/" + user +
               " --orchestrator localhost:" + std::to_string(port_));
  }

  std::string WriteJob(const std::string& name, const std::string& yaml) const {
    const std::string path = dir_ + "/" + name + ".yaml";
    std::ofstream(path) << yaml;
    return path;
  }

  nlohmann::json Status(const std::string& job) const {
    return LastJson(User("status " + job + " --json").out);
  }

  const std::string& dir() const { return dir_; }
  int port() const { return port_; }

 private:
  static std::string ConnectedLine(const std::string& silo) {
    return "silo '" + silo + "' connected from";
  }

  std::string dir_;
  int port_ = 0;
  std::map<std::string, pid_t> pids_;
  std::map<std::string, int> connections_before_;
};

inline ModelState Tensors(const std::string& path) {
  auto file = ReadModelStateFile(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(file->state) : ModelState();
}

inline bool SameValues(const ModelState& a, const ModelState& b) {
  if (a.tensors().size() != b.tensors().size() || a.tensors().empty()) return false;
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const Tensor& x = a.tensors()[i];
    const Tensor& y = b.tensors()[i];
    if (x.name() != y.name() || x.num_bytes() != y.num_bytes() ||
        std::memcmp(x.data(), y.data(), x.num_bytes()) != 0) {
      return false;
    }
  }
  return true;
}
}  // namespace fedsilo::testing_util

#endif  // FEDSILO_TESTS_FEDERATION_PROCESSES_H_
