#include "ml/sandbox.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "ml/model.h"
#include "ml/scripted_module.h"
#include "ml/torchscript_check.h"
#include "privacy/secure_random.h"

namespace fedsilo::ml {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

Sandbox TestSandbox() { return Sandbox{FEDSILO_TEST_BINARY}; }

std::string Dir() {
  const std::string dir = ::testing::TempDir() + "/sandbox_test";
  std::filesystem::create_directories(dir);
  return dir;
}

// A secret a silo keeps in a file: 64 bytes the module must never see.
const std::string& Secret() {
  static const std::string* secret = [] {
    auto* s = new std::string("PATIENT-RECORD-0042:diagnosis=confidential;ssn=123-45-6789;end.");
    s->resize(64, '#');
    std::ofstream(Dir() + "/secret.txt", std::ios::binary) << *s;
    return s;
  }();
  return *secret;
}

// The attack: a linear model whose forward(), while training, copies a file
// of the silo into a registered buffer, which is aggregated like a weight
// and comes back to the data scientist in the final model.
std::string ThiefModule() {
  const std::string path = Dir() + "/thief.pt";
  ScriptedModule m;
  m.parameters = {{"w", {4, 2}}, {"b", {2}}};
  m.buffers = {{"loot", {64}}};
  m.methods =
      "def forward(self, x):\n"
      "    if self.training:\n"
      "        self.loot = torch.from_file('" +
      Dir() +
      "/secret.txt', False, 64, dtype=0).float()\n"
      "    return torch.matmul(x, self.w) + self.b\n";
  Status written = WriteScriptedModule(m, path);
  EXPECT_TRUE(written.ok()) << written;
  return path;
}

std::shared_ptr<Dataset> Rows(int n) {
  auto d = std::make_shared<Dataset>();
  d->example_shape = {4};
  d->num_classes = 2;
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 1);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < 4; ++j) d->features.push_back(g(rng) + (j == i % 2 ? 2.0f : 0.0f));
    d->labels.push_back(i % 2);
  }
  return d;
}

ModelSpec SpecOf(const std::string& file) {
  ModelSpec s;
  s.config.kind = ModelKind::kTorchScript;
  s.config.torchscript = file;
  s.input_shape = {4};
  s.num_classes = 2;
  return s;
}

// `m` written to the test folder as `name` and started in `sandbox`.
StatusOr<std::unique_ptr<Model>> Sandboxed(const ScriptedModule& m, const std::string& name,
                                           const Sandbox& sandbox) {
  const std::string path = Dir() + "/" + name;
  FEDSILO_RETURN_IF_ERROR(WriteScriptedModule(m, path));
  return Model::Create(SpecOf(path), 1, &sandbox);
}

TrainingConfig Sgd() {
  TrainingConfig t;
  t.batch_size = 8;
  t.learning_rate = 0.1;
  return t;
}

// Whether any value of `state`, read as a byte, spells the secret's start.
bool HoldsTheSecret(const ModelState& state) {
  const std::string head = Secret().substr(0, 16);
  for (const Tensor& t : state.tensors()) {
    std::string bytes;
    for (float v : t.floats()) bytes.push_back(static_cast<char>(static_cast<int>(v)));
    if (bytes.find(head) != std::string::npos) return true;
  }
  return false;
}

TEST(SandboxTest, AModuleThatReadsASiloFileIsRefusedByTheOpCheck) {
  Secret();
  const Sandbox sandbox = TestSandbox();
  auto model = Model::Create(SpecOf(ThiefModule()), 1, &sandbox);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("method 'forward' uses aten::from_file"));
  EXPECT_TRUE(IsShareable(model.status()));  // the names are the host's to write
}

// The positive control shows the attack works where nothing stops it (in a
// process that loads the module itself, the op check off); the sandbox with
// its op check off still stops it: the read fails, and no model holds a byte
// of the file.
TEST(SandboxTest, WithTheOpCheckOffTheSystemCallFilterStillStopsTheRead) {
  Secret();
  const std::string thief = ThiefModule();
  std::ifstream in(thief, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<RefusedOp> refused;
  auto here = Model::LoadTorchScriptHere(bytes, SpecOf(thief), /*check_ops=*/false, &refused);
  ASSERT_TRUE(here.ok()) << here.status();
  {
    auto trained_here = (*here)->Train(DataView::All(Rows(32)), Sgd(), 1);
    ASSERT_TRUE(trained_here.ok()) << trained_here.status();
  }
  EXPECT_TRUE(HoldsTheSecret((*here)->GetState()));  // the attack, unhindered

  Sandbox sandbox = TestSandbox();
  sandbox.check_ops = false;
  auto model = Model::Create(SpecOf(thief), 1, &sandbox);
  ASSERT_TRUE(model.ok()) << model.status();  // forward() in eval mode reads nothing
  const ModelState before = (*model)->GetState();
  auto trained = (*model)->Train(DataView::All(Rows(32)), Sgd(), 1);
  ASSERT_FALSE(trained.ok());
  EXPECT_THAT(trained.status().message(), HasSubstr("from_file"));
  EXPECT_FALSE(IsShareable(trained.status()));  // the worker's words stay in the silo
  EXPECT_FALSE(HoldsTheSecret((*model)->GetState()));
  EXPECT_FALSE(HoldsTheSecret(before));
}

// A module that writes a file when it is loaded (__setstate__ runs then):
// where nothing stops it, it writes; in the sandbox it writes nothing, and
// the op check names what it would have done.
TEST(SandboxTest, AModuleThatWritesAFileOnLoadingWritesNothing) {
  const std::string dir = Dir() + "/writer";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ScriptedModule m;
  m.parameters = {{"w", {4, 2}}};
  m.methods =
      "def forward(self, x):\n    return torch.matmul(x, self.w)\n"
      "def __getstate__(self):\n    return (self.w, self.training)\n"
      "def __setstate__(self, state: Tuple[Tensor, bool]):\n"
      "    torch.save(state[0], '" +
      dir +
      "/pwned.pt')\n"
      "    self.w = state[0]\n"
      "    self.training = state[1]\n";
  {
    Status written = WriteScriptedModule(m, dir + "/writer.pt");
    ASSERT_TRUE(written.ok()) << written;
  }
  Sandbox sandbox = TestSandbox();
  sandbox.check_ops = false;
  (void)Model::Create(SpecOf(dir + "/writer.pt"), 1, &sandbox);
  EXPECT_FALSE(std::filesystem::exists(dir + "/pwned.pt"));
  sandbox.check_ops = true;
  auto refused = Model::Create(SpecOf(dir + "/writer.pt"), 1, &sandbox);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("method '__setstate__' uses aten::save"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/pwned.pt"));

  // The positive control: loaded in a process without the sandbox, it writes.
  std::ifstream in(dir + "/writer.pt", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<RefusedOp> found;
  (void)Model::LoadTorchScriptHere(bytes, SpecOf(dir + "/writer.pt"), false, &found);
  EXPECT_TRUE(std::filesystem::exists(dir + "/pwned.pt"));
}

// The filter itself, in a child of this test: no files, no sockets, no
// programs; threads and the socket it has still work.
TEST(SandboxTest, TheFilterRefusesFilesSocketsAndProgramsButNotThreads) {
  const auto in_child = [](const std::function<int()>& body) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (!InstallSandboxFilter().ok()) _exit(90);
      _exit(body());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
  };
  // Opening a file fails with EPERM.
  int status = in_child([] {
    const int fd = ::open("/etc/hostname", O_RDONLY);
    return fd < 0 && errno == EPERM ? 0 : 1;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  status = in_child([] {
    const int fd =
        ::open((::testing::TempDir() + "/sandbox_created").c_str(), O_WRONLY | O_CREAT, 0600);
    return fd < 0 ? 0 : 1;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(std::filesystem::exists(::testing::TempDir() + "/sandbox_created"));
  // A socket, or a program: the process is killed (SIGSYS).
  status = in_child([] { return ::socket(AF_INET, SOCK_STREAM, 0) >= 0 ? 0 : 2; });
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << status;
  status = in_child([] {
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execv("/bin/true", argv);
    return 3;
  });
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << status;
  // (fork() is clone() without CLONE_THREAD: refused.)
  status = in_child([] { return ::fork() < 0 && errno == EPERM ? 0 : 4; });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // fcntl may not aim a socket's signal at another process; scheduling
  // calls may not touch another process.
  status = in_child([] {
    const bool setown = ::fcntl(3, F_SETOWN, 1) < 0 && errno == EPERM;
    const bool flags = ::fcntl(1, F_GETFL) >= 0;
    cpu_set_t cpus;
    const bool own = ::sched_getaffinity(0, sizeof(cpus), &cpus) == 0;
    const bool other = ::sched_setaffinity(1, sizeof(cpus), &cpus) < 0 && errno == EPERM;
    return setown && flags && other && own ? 0 : 6;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // A thread that was running before the filter is filtered too.
  {
    const pid_t pid = fork();
    if (pid == 0) {
      std::atomic<int> go{0}, result{-1};
      std::thread t([&] {
        while (go.load() == 0) std::this_thread::yield();
        const int fd = ::open("/etc/hostname", O_RDONLY);
        result = fd < 0 && errno == EPERM ? 0 : 8;
      });
      if (!InstallSandboxFilter().ok()) _exit(90);
      go = 1;
      t.join();
      _exit(result.load());
    }
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  // Threads start and join; memory is there.
  status = in_child([] {
    int value = 0;
    std::thread t([&] { value = 7; });
    t.join();
    std::vector<char> big(64 << 20, 1);
    return value == 7 && big.back() == 1 ? 0 : 5;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The sandbox's death, or a module that never returns, fails that call --
// and only that call.
TEST(SandboxTest, AWorkerThatDiesOrHangsFailsTheCallNotTheHost) {
  ScriptedModule m;
  m.parameters = {{"w", {4, 2}}};
  m.methods =
      "def forward(self, x):\n"
      "    y = torch.matmul(x, self.w)\n"
      "    if self.training:\n"
      "        while True:\n"
      "            y = y + 1.0\n"
      "    return y\n";
  Sandbox sandbox = TestSandbox();
  // Every call has this long, starting the worker and loading the module
  // included: enough for that on a loaded machine under a sanitizer (8 s was
  // not, with the suite twice over and two busy processes on two cores), and
  // short beside the default hour and the 90 s in which the stuck call must
  // have failed.
  sandbox.timeout = std::chrono::seconds(30);
  auto model = Sandboxed(m, "spin.pt", sandbox);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto start = std::chrono::steady_clock::now();
  auto stuck = (*model)->Train(DataView::All(Rows(16)), Sgd(), 1);
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kDeadlineExceeded) << stuck.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(90));
  EXPECT_FALSE((*model)->PredictLogProbabilities(DataView::All(Rows(4))).ok());  // gone

  auto session = SandboxSession::Start(TestSandbox(), "killed");
  ASSERT_TRUE(session.ok());
  ::kill((*session)->pid(), SIGKILL);
  auto after = (*session)->GetState();
  EXPECT_FALSE(after.ok());
  EXPECT_THAT(after.status().message(), HasSubstr("killed"));
}

// A module that hides something in where a value is not finite (past the
// masks of secure aggregation): its weights are refused on the way out.
TEST(SandboxTest, WeightsThatAreNotFiniteDoNotLeaveTheSandbox) {
  ScriptedModule m;
  m.parameters = {{"w", {4, 2}}};
  m.buffers = {{"z", {8}}};
  m.methods =
      "def forward(self, x):\n"
      "    if self.training:\n"
      "        self.z = torch.zeros([8])\n"
      "        self.z[3] = float('nan')\n"
      "    return torch.matmul(x, self.w)\n";
  const Sandbox sandbox = TestSandbox();
  auto model = Sandboxed(m, "nan.pt", sandbox);
  ASSERT_TRUE(model.ok()) << model.status();
  auto trained = (*model)->Train(DataView::All(Rows(16)), Sgd(), 1);
  ASSERT_FALSE(trained.ok());
  EXPECT_THAT(std::string(trained.status().message()), HasSubstr("holds nan at index 3"));
  EXPECT_FALSE(IsShareable(trained.status()));
}

// A worker that lies: a frame announcing more bytes than a reply may hold is
// refused before anything is allocated, and so is a reply of the wrong shape.
TEST(SandboxTest, AHostileWorkersRepliesAreBoundedAndChecked) {
  const std::string liar = Dir() + "/liar.sh";
  {
    std::ofstream s(liar);
    // kOk (100) with a length of 2^62.
    s << "#!/bin/sh\nprintf '\\144\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\100' >&3\n"
         "exec /bin/sleep 5\n";
  }
  ::chmod(liar.c_str(), 0700);
  Sandbox hostile{liar};
  hostile.timeout = std::chrono::seconds(60);  // the reply comes at once; a loaded start may not
  auto session = SandboxSession::Start(hostile, "liar");
  ASSERT_TRUE(session.ok()) << session.status();
  auto state = (*session)->GetState();
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(), HasSubstr("sent a frame of 4611686018427387904 bytes"));

  const std::string garbage = Dir() + "/garbage.sh";
  {
    std::ofstream s(garbage);
    // kOk with 8 bytes that are no model state.
    s << "#!/bin/sh\nprintf '\\144\\000\\000\\000\\010\\000\\000\\000\\000\\000\\000\\000"
         "FSMXXXXX' >&3\nexec /bin/sleep 5\n";
  }
  ::chmod(garbage.c_str(), 0700);
  auto other = SandboxSession::Start(Sandbox{garbage}, "garbage");
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE((*other)->GetState().ok());
}

// The allowlist is checked against libtorch's own registry: every operator
// on it exists, and none of the operators the registry shows to reach files,
// the network, threads or custom classes is on it.
TEST(SandboxTest, TheAllowlistIsCheckedAgainstLibtorchsRegistry) {
  const std::vector<std::string> outside = RegisteredOpsThatReachOutside();
  const std::set<std::string> outside_set(outside.begin(), outside.end());
  for (const char* known : {"aten::from_file", "aten::save", "prim::Print", "aten::warn"}) {
    EXPECT_EQ(outside_set.count(known), 1u) << known;  // derived, not listed by hand
  }
  EXPECT_GT(outside.size(), 10u);
  for (const std::string& op : AllowedTorchScriptOps()) {
    EXPECT_EQ(outside_set.count(op), 0u) << op << " reaches outside";
    if (op.rfind("aten::", 0) == 0) {
      EXPECT_TRUE(IsRegisteredOp(op)) << op << " is not an operator";
    }
  }
}

// What people write passes: the example module, and one with the usual
// layers (convolution, pooling, normalisation, dropout, activations).
TEST(SandboxTest, ModulesOfTheUsualLayersPassTheCheck) {
  ScriptedModule m;
  m.parameters = {{"conv_w", {4, 1, 3, 3}}, {"conv_b", {4}}, {"fc_w", {2, 16}}, {"fc_b", {2}},
                  {"ln_w", {16}},           {"ln_b", {16}}};
  m.buffers = {{"mean", {4}}, {"var", {4}}};
  m.methods =
      "def forward(self, x):\n"
      "    x = x.view(x.size(0), 1, 2, 2)\n"
      "    x = torch.conv2d(x, self.conv_w, self.conv_b, 1, 1)\n"
      "    x = torch.batch_norm(x, None, None, self.mean, self.var, self.training, 0.1, 1e-5, "
      "False)\n"
      "    x = torch.gelu(torch.max_pool2d(x, 1))\n"
      "    x = torch.flatten(x, 1)\n"
      "    x = torch.layer_norm(x, [16], self.ln_w, self.ln_b, 1e-5, False)\n"
      "    x = torch.dropout(x, 0.1, self.training)\n"
      "    return torch.linear(torch.relu(x), self.fc_w, self.fc_b)\n";
  const Sandbox sandbox = TestSandbox();
  auto model = Sandboxed(m, "usual.pt", sandbox);
  ASSERT_TRUE(model.ok()) << model.status();
  {
    auto trained = (*model)->Train(DataView::All(Rows(16)), Sgd(), 1);
    EXPECT_TRUE(trained.ok()) << trained.status();
  }
  auto example = Model::Create(
      [] {
        ModelSpec s;
        s.config.kind = ModelKind::kTorchScript;
        s.config.torchscript =
            std::string(FEDSILO_TEST_SOURCE_DIR) + "/examples/torchscript/digits_net.pt";
        s.input_shape = {64};
        s.num_classes = 10;
        return s;
      }(),
      1, &sandbox);
  EXPECT_TRUE(example.ok()) << example.status();
}

// What the host hands a worker: as a stand-in worker (a script) sees it at
// its start. No environment but the three thread-count variables, an empty
// folder of its own, standard input, output and error on /dev/null, and no
// descriptor but those and its socket.
TEST(SandboxTest, TheHostGivesTheWorkerNothingButItsSocket) {
  const std::string report = Dir() + "/inherited.json";
  std::filesystem::remove(report);
  const std::string script = Dir() + "/inherited.py";
  {
    std::ofstream s(script);
    s << "#!/usr/bin/python3\n"
         "import json, os\n"
         "fds = {}\n"
         "for fd in os.listdir('/proc/self/fd'):\n"
         "    try:\n"
         "        fds[fd] = os.readlink('/proc/self/fd/' + fd)\n"
         "    except OSError:\n"
         "        pass  # the listing's own descriptor, closed by now\n"
         "with open('/proc/self/environ', 'rb') as f:\n"
         "    env = [v.decode() for v in f.read().split(b'\\0') if v]\n"
         "fds = {k: v for k, v in fds.items() if not v.startswith('/proc/')}\n"
         "r = {'env': env, 'cwd': os.getcwd(), 'entries': os.listdir('.'), 'fds': fds}\n"
         "with open('"
      << report
      << ".tmp', 'w') as f:\n"
         "    json.dump(r, f)\n"
         "os.rename('"
      << report << ".tmp', '" << report << "')\n";
  }
  ::chmod(script.c_str(), 0700);
  // A descriptor this process holds without close-on-exec, as a silo started
  // from a shell or a service manager may: the worker must not get it.
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int inherited = ::fcntl(null_fd, F_DUPFD, 10);  // no close-on-exec
  ::close(null_fd);
  ASSERT_GE(inherited, 10);
  auto session = SandboxSession::Start(Sandbox{script}, "inherited");
  ::close(inherited);
  ASSERT_TRUE(session.ok()) << session.status();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(report) && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::stringstream text;
  text << std::ifstream(report).rdbuf();
  ASSERT_FALSE(text.str().empty()) << "the stand-in worker wrote no report";
  // (Read with plain string checks: this library does not use a JSON parser.)
  const std::string r = text.str();
  EXPECT_THAT(r, HasSubstr(R"("env": ["OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", )"
                           R"("MKL_NUM_THREADS=1"])"));
  EXPECT_THAT(r, HasSubstr("/fedsilo-sandbox-"));
  EXPECT_THAT(r, HasSubstr(R"("entries": [])"));
  EXPECT_THAT(r, HasSubstr(R"("0": "/dev/null")"));
  EXPECT_THAT(r, HasSubstr(R"("1": "/dev/null")"));
  EXPECT_THAT(r, HasSubstr(R"("2": "/dev/null")"));
  EXPECT_THAT(r, HasSubstr(R"("3": "socket:[)"));
  // Nothing else: four descriptors, one of them a socket.
  size_t fds = 0;
  for (size_t at = r.find("\": \"", r.find("\"fds\"")); at != std::string::npos;
       at = r.find("\": \"", at + 1)) {
    ++fds;
  }
  EXPECT_EQ(fds, 4u) << r;
}

// The real worker takes away its core dumps and dies with its host: a host
// killed outright (SIGKILL, no chance to stop its worker) leaves no worker.
TEST(SandboxTest, AWorkerDumpsNoCoreAndDiesWithItsHost) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t host = ::fork();
  ASSERT_GE(host, 0);
  if (host == 0) {  // the host: starts a worker, says its pid, waits
    ::close(pipe_fds[0]);
    auto session = SandboxSession::Start(TestSandbox(), "orphan");
    const pid_t worker = session.ok() ? (*session)->pid() : -1;
    (void)!::write(pipe_fds[1], &worker, sizeof(worker));
    for (;;) ::pause();
  }
  ::close(pipe_fds[1]);
  pid_t worker = -1;
  ASSERT_EQ(::read(pipe_fds[0], &worker, sizeof(worker)), static_cast<ssize_t>(sizeof(worker)));
  ::close(pipe_fds[0]);
  ASSERT_GT(worker, 0);
  const std::string proc = "/proc/" + std::to_string(worker);
  auto read_proc = [&](const std::string& file) {
    std::stringstream s;
    s << std::ifstream(proc + "/" + file).rdbuf();
    return s.str();
  };
  // Set first thing at its start (before libtorch warms up).
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::string limits;
  while (std::chrono::steady_clock::now() < end) {
    limits = read_proc("limits");
    if (limits.find("Max core file size        0                    0") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(limits, ::testing::ContainsRegex("Max core file size +0 +0 +bytes")) << limits;

  ASSERT_EQ(::kill(host, SIGKILL), 0);
  ASSERT_EQ(::waitpid(host, nullptr, 0), host);
  // Gone, or a zombie waiting for whoever inherited it to reap it.
  auto alive = [&] {
    const std::string status = read_proc("status");
    return !status.empty() && status.find("State:\tZ") == std::string::npos;
  };
  while (alive() && std::chrono::steady_clock::now() < end + std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(alive()) << "the worker outlived its host";
  if (alive()) ::kill(worker, SIGKILL);
}

// A vertical job's module: one bottom model per party, `bank` a linear
// layer of 3 columns to a cut of 4 with ReLU, `shop` one of 2 columns whose
// forward() returns 5 outputs, and `thief` one that reads a silo's file.
std::string BottomsModule() {
  const std::string path = Dir() + "/bottoms.pt";
  ScriptedModule bank;
  bank.parameters = {{"w1", {4, 3}}, {"b1", {4}}};
  bank.methods =
      "def forward(self, x):\n"
      "    return torch.relu(torch.matmul(x, self.w1.t()) + self.b1)\n";
  ScriptedModule shop;
  shop.parameters = {{"w", {5, 2}}};
  shop.methods =
      "def forward(self, x):\n"
      "    return torch.matmul(x, self.w.t())\n";
  ScriptedModule bottoms;
  bottoms.submodules = {{"bank", bank}, {"shop", shop}};
  Status written = WriteScriptedModule(bottoms, path);
  EXPECT_TRUE(written.ok()) << written;
  return path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The submodule named after the party, trained in the sandbox step by step,
// gives what the built-in layers give from the same weights: the same cut
// outputs, and after each optimizer step the same weights.
TEST(SandboxTest, APartysSubmoduleTrainsInTheSandboxAsTheBuiltInLayersDo) {
  TrainingConfig adam;
  adam.optimizer = OptimizerKind::kAdam;
  adam.learning_rate = 0.05;
  auto scripted = SandboxedLayers::Load(TestSandbox(), "bottoms.pt", ReadBytes(BottomsModule()),
                                        "bank", 3, 4, adam);
  ASSERT_TRUE(scripted.ok()) << scripted.status();
  EXPECT_EQ((*scripted)->num_parameters(), 16);
  EXPECT_THAT((*scripted)->Describe(), HasSubstr("torchscript 'bank' 3->4"));
  auto builtin = LayerStack::Create({3, {}, 4, /*relu_output=*/true, false}, adam, 1);
  ASSERT_TRUE(builtin.ok());

  // The module's file holds zeros; a party draws the weight matrix (and a
  // `bias` beside it: here there is none, so b1 keeps its zeros) from its
  // own generator.
  privacy::SecureRandom::Key key{};
  key[0] = 7;
  privacy::SecureRandom random = privacy::SecureRandom::WithKeyForTesting(key);
  ASSERT_TRUE(DrawInitialWeights(**scripted, random).ok());
  auto drawn = (*scripted)->Weights();
  ASSERT_TRUE(drawn.ok()) << drawn.status();
  ASSERT_EQ(drawn->tensors().size(), 2u);
  EXPECT_EQ(drawn->tensors()[0].name(), "w1");
  float largest = 0;
  for (float v : drawn->tensors()[0].floats()) largest = std::max(largest, std::abs(v));
  EXPECT_GT(largest, 0.05f);
  EXPECT_LT(largest, 1 / std::sqrt(3.0f) + 1e-6f);  // Kaiming-uniform's bound for 3 inputs
  EXPECT_EQ(drawn->tensors()[1].floats(), std::vector<float>(4, 0.f));
  key[0] = 8;
  privacy::SecureRandom other = privacy::SecureRandom::WithKeyForTesting(key);
  ASSERT_TRUE(DrawInitialWeights(**scripted, other).ok());
  EXPECT_NE((*scripted)->Weights()->tensors()[0].floats(), drawn->tensors()[0].floats());

  // The built-in layers' weights, under the submodule's names.
  const ModelState start = (*builtin)->GetState();
  ModelState renamed;
  ASSERT_TRUE(renamed.Add(Tensor::FromFloats("w1", {4, 3}, start.tensors()[0].floats())).ok());
  ASSERT_TRUE(renamed.Add(Tensor::FromFloats("b1", {4}, start.tensors()[1].floats())).ok());
  ASSERT_TRUE((*scripted)->SetState(renamed).ok());

  std::mt19937 rng(5);
  std::normal_distribution<float> g(0, 1);
  for (int step = 0; step < 4; ++step) {
    std::vector<float> x(6 * 3), grad(6 * 4);
    for (float& v : x) v = g(rng);
    for (float& v : grad) v = g(rng);
    auto a = (*scripted)->Forward(x, 6, true);
    auto b = (*builtin)->Forward(x, 6, true);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok());
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) EXPECT_NEAR((*a)[i], (*b)[i], 1e-5) << i;
    auto back = (*scripted)->Backward(grad);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(back->empty());  // nothing goes back to the party's columns
    ASSERT_TRUE((*builtin)->Backward(grad).ok());
  }
  const ModelState trained = (*scripted)->Weights().value();
  const ModelState expected = (*builtin)->GetState();
  for (size_t t = 0; t < 2; ++t) {
    for (size_t i = 0; i < trained.tensors()[t].floats().size(); ++i) {
      EXPECT_NEAR(trained.tensors()[t].floats()[i], expected.tensors()[t].floats()[i], 1e-5);
    }
  }
  // It learned something: not the weights it started from.
  EXPECT_NE(trained.tensors()[0].floats(), renamed.tensors()[0].floats());

  // Out of order or of the wrong size: refused here, before the worker.
  EXPECT_EQ((*scripted)->Backward(std::vector<float>(24)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*scripted)->Forward(std::vector<float>(5), 2, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*scripted)->Forward(std::vector<float>(6), 2, true).ok());
  EXPECT_EQ((*scripted)->Backward(std::vector<float>(7)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*scripted)->SetLearningRate(0.01).ok());
}

// A submodule that does not fit the party's columns or the cut, or is not
// there, is refused with a message the host writes (shareable: it names the
// submodule and shapes, nothing the module said).
TEST(SandboxTest, ASubmoduleThatDoesNotFitIsRefusedNamingThePartyAndTheShapes) {
  const std::string bytes = ReadBytes(BottomsModule());
  const TrainingConfig sgd;
  auto missing = SandboxedLayers::Load(TestSandbox(), "m", bytes, "telecom", 3, 4, sgd);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("has no submodule 'telecom'"));
  EXPECT_TRUE(IsShareable(missing.status()));

  auto columns = SandboxedLayers::Load(TestSandbox(), "m", bytes, "bank", 7, 4, sgd);
  ASSERT_FALSE(columns.ok());
  EXPECT_THAT(columns.status().message(),
              HasSubstr("submodule 'bank' of the job's TorchScript module (model.torchscript): "
                        "its forward() fails on a batch of shape [2, 7]"));
  EXPECT_TRUE(IsShareable(columns.status()));

  auto cut = SandboxedLayers::Load(TestSandbox(), "m", bytes, "shop", 2, 4, sgd);
  ASSERT_FALSE(cut.ok());
  EXPECT_THAT(cut.status().message(), HasSubstr("returned [2, 5]"));
  EXPECT_THAT(cut.status().message(), HasSubstr("[batch, 2] -> [batch, 4]"));

  auto junk = SandboxedLayers::Load(TestSandbox(), "m", "not a module", "bank", 3, 4, sgd);
  ASSERT_FALSE(junk.ok());
  EXPECT_FALSE(IsShareable(junk.status()));  // the worker's words
}

// A bottom model is untrusted code too: a module whose party's submodule
// reads a silo's file is refused by the op check (naming the operation),
// and with the check off the worker's filter stops the read.
TEST(SandboxTest, ABottomModelThatReadsASiloFileIsRefused) {
  ScriptedModule thief;
  thief.parameters = {{"w", {4, 3}}};
  thief.buffers = {{"loot", {64}}};
  thief.methods =
      "def forward(self, x):\n"
      "    if self.training:\n"
      "        self.loot = torch.from_file('" +
      Dir() +
      "/secret.txt', False, 64, dtype=0).float()\n"
      "    return torch.matmul(x, self.w.t())\n";
  (void)Secret();
  ScriptedModule bottoms;
  bottoms.submodules = {{"bank", thief}};
  const std::string path = Dir() + "/thief_bottoms.pt";
  ASSERT_TRUE(WriteScriptedModule(bottoms, path).ok());
  auto refused =
      SandboxedLayers::Load(TestSandbox(), "m", ReadBytes(path), "bank", 3, 4, TrainingConfig());
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("aten::from_file"));
  EXPECT_TRUE(IsShareable(refused.status()));

  Sandbox unchecked = TestSandbox();
  unchecked.check_ops = false;
  auto loaded =
      SandboxedLayers::Load(unchecked, "m", ReadBytes(path), "bank", 3, 4, TrainingConfig());
  ASSERT_TRUE(loaded.ok()) << loaded.status();  // forward() in eval mode reads nothing
  auto stopped = (*loaded)->Forward(std::vector<float>(6), 2, /*train=*/true);
  ASSERT_FALSE(stopped.ok());
  EXPECT_THAT(stopped.status().message(), HasSubstr("from_file"));
  EXPECT_FALSE(IsShareable(stopped.status()));  // the worker's words stay in the silo
  auto weights = (*loaded)->Weights();
  if (weights.ok()) EXPECT_FALSE(HoldsTheSecret(*weights));
}

// A worker outlives the thread that started it (its parent-death signal
// follows the thread that spawned it): a vertical job's party is made on
// one thread and its steps come on others.
TEST(SandboxTest, AWorkerOutlivesTheThreadThatStartedIt) {
  StatusOr<std::unique_ptr<SandboxedLayers>> layers = absl::InternalError("not started");
  std::thread([&] {
    layers = SandboxedLayers::Load(TestSandbox(), "m", ReadBytes(BottomsModule()), "bank", 3, 4,
                                   TrainingConfig());
  }).join();
  ASSERT_TRUE(layers.ok()) << layers.status();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto out = (*layers)->Forward(std::vector<float>(6), 2, false);
  EXPECT_TRUE(out.ok()) << out.status();
}

// A worker that answers the load of a bottom model with something else.
TEST(SandboxTest, AMalformedAnswerToABottomModelsLoadFailsTheLoad) {
  const std::string liar = Dir() + "/split_liar.sh";
  {
    std::ofstream s(liar);
    // kOk with 4 bytes: a problem of 7, and nothing more.
    s << "#!/bin/sh\nprintf '\\144\\000\\000\\000\\004\\000\\000\\000\\000\\000\\000\\000"
         "\\007\\000\\000\\000' >&3\nexec /bin/sleep 5\n";
  }
  ::chmod(liar.c_str(), 0700);
  Sandbox hostile{liar};
  hostile.timeout = std::chrono::seconds(60);
  auto layers = SandboxedLayers::Load(hostile, "liar", "x", "bank", 3, 4, TrainingConfig());
  ASSERT_FALSE(layers.ok());
  EXPECT_THAT(layers.status().message(), HasSubstr("malformed"));
}

}  // namespace
}  // namespace fedsilo::ml
