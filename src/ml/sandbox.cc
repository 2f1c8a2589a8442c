// The sandbox's host side, and the system-call filter its worker runs under.
#include "ml/sandbox.h"

#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model_state_file.h"
#include "core/mutex.h"
#include "ml/model.h"
#include "ml/sandbox_protocol.h"
#include "ml/torchscript_check.h"

namespace fedsilo::ml {
namespace {

using sandbox::Kind;
using sandbox::Reader;
using sandbox::Writer;

constexpr uint64_t kSlack = 1 << 20;  // headers, names, the error of a reply
constexpr size_t kMaxMessage = 2000;  // a worker's error

// A worker's words, made printable and short.
std::string Printable(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, kMaxMessage)) out.push_back(c >= 32 && c < 127 ? c : '?');
  return out;
}

// An op or method name as the op check writes them, and nothing else.
bool IsName(const std::string& s) {
  if (s.empty() || s.size() > 200) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':' || c == '.' ||
          c == ' ')) {
      return false;
    }
  }
  return true;
}

// Starts workers from one thread that lives as long as the process: a
// worker's parent-death signal (PR_SET_PDEATHSIG) follows the thread that
// started it, not the process, and a session may outlive the thread that
// opened it (a vertical job's steps come on different threads).
// A process forked from one with a spawner has none running (only the
// forking thread lives on in it): it starts its own.
class Spawner {
 public:
  static Spawner& Get() {
    static std::atomic<Spawner*> current{nullptr};
    Spawner* spawner = current.load();
    if (spawner == nullptr || spawner->pid_ != ::getpid()) {
      static Mutex* const mu = new Mutex();
      MutexLock lock(mu);
      spawner = current.load();
      if (spawner == nullptr || spawner->pid_ != ::getpid()) {
        spawner = new Spawner();  // never destroyed: its thread runs on
        current.store(spawner);
      }
    }
    return *spawner;
  }
  // posix_spawn's result, run on the spawner's thread.
  int Run(std::function<int()> spawn) {
    auto job = std::make_shared<Job>();
    job->spawn = std::move(spawn);
    MutexLock lock(&mu_);
    queue_.push_back(job);
    cv_.SignalAll();
    while (!job->done) cv_.Wait(&mu_);
    return job->result;
  }

 private:
  struct Job {
    std::function<int()> spawn;
    bool done = false;
    int result = 0;
  };
  Spawner() : pid_(::getpid()) {
    std::thread([this] { Serve(); }).detach();
  }
  void Serve() {
    MutexLock lock(&mu_);
    for (;;) {
      while (queue_.empty()) cv_.Wait(&mu_);
      std::shared_ptr<Job> job = queue_.front();
      queue_.erase(queue_.begin());
      job->result = job->spawn();  // quick: posix_spawn returns once the child runs
      job->done = true;
      cv_.SignalAll();
    }
  }

  const pid_t pid_;  // of the process whose thread serves
  Mutex mu_;
  CondVar cv_;
  std::vector<std::shared_ptr<Job>> queue_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

Sandbox Sandbox::ThisProgram() {
  Sandbox s;
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  s.program = n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string("/proc/self/exe");
  return s;
}

StatusOr<std::unique_ptr<SandboxSession>> SandboxSession::Start(const Sandbox& sandbox,
                                                                std::string where) {
  auto session = std::unique_ptr<SandboxSession>(new SandboxSession(sandbox, std::move(where)));
  // An empty folder of its own, for its working directory.
  std::string folder = (std::filesystem::temp_directory_path() / "fedsilo-sandbox-XXXXXX").string();
  if (::mkdtemp(folder.data()) == nullptr) {
    return absl::InternalError(absl::StrCat(
        session->where_, ": cannot make the sandbox's folder: ", std::strerror(errno)));
  }
  session->folder_ = folder;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::InternalError(absl::StrCat(
        session->where_, ": cannot make the sandbox's socket: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  // Not the host's standard error either: the worker could write lines into
  // the silo's log that look like the silo's own.
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 3);  // dup2 clears close-on-exec
  // Nor anything the host inherited without close-on-exec (from a shell, a
  // service manager): the worker closes the rest itself too, but only once
  // it runs.
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  posix_spawn_file_actions_addchdir_np(&actions, folder.c_str());
  std::string program = sandbox.program;
  char arg0[] = "fedsilo-sandbox", arg1[] = "sandbox-worker";
  char* argv[] = {arg0, arg1, nullptr};
  // No environment but what keeps libtorch and BLAS on one thread.
  char env0[] = "OMP_NUM_THREADS=1", env1[] = "OPENBLAS_NUM_THREADS=1",
       env2[] = "MKL_NUM_THREADS=1";
  char* envp[] = {env0, env1, env2, nullptr};
  pid_t pid = -1;
  int rc = EAGAIN;
  try {
    rc = Spawner::Get().Run(
        [&] { return ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, envp); });
  } catch (const std::exception&) {
    rc = EAGAIN;  // no thread to start it from
  }
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  session->fd_ = fds[0];
  if (rc != 0) {
    return absl::InternalError(absl::StrCat(session->where_, ": cannot start the sandbox ", program,
                                            ": ", std::strerror(rc)));
  }
  session->pid_ = pid;
  return session;
}

SandboxSession::~SandboxSession() { Stop(); }

void SandboxSession::Stop() {
  if (fd_ >= 0) ::close(fd_);  // the worker reads the end and leaves
  fd_ = -1;
  if (pid_ > 0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }
  if (!folder_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(folder_, ec);
    folder_.clear();
  }
}

StatusOr<std::string> SandboxSession::Call(uint32_t kind, const std::string& payload,
                                           uint64_t max_reply) {
  if (fd_ < 0) {
    return absl::UnavailableError(absl::StrCat(where_, ": the sandbox has ended"));
  }
  const std::string peer = absl::StrCat(where_, ": the sandbox");
  Status sent = sandbox::WriteFrame(fd_, static_cast<Kind>(kind), payload, peer);
  StatusOr<sandbox::Frame> reply =
      sent.ok() ? sandbox::ReadFrame(fd_, max_reply,
                                     std::chrono::steady_clock::now() + sandbox_.timeout, peer)
                : StatusOr<sandbox::Frame>(sent);
  if (!reply.ok()) {
    // Dead, silent or babbling: the worker is done for. If it died by itself
    // (a forbidden system call, a crash), say how.
    int status = 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const bool died = ::waitpid(pid_, &status, WNOHANG) == pid_;
    if (!died) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
    ::close(fd_);
    fd_ = -1;
    if (died && WIFSIGNALED(status)) {
      return absl::InternalError(absl::StrCat(
          where_, ": the sandboxed module's process ended by signal ", WTERMSIG(status),
          WTERMSIG(status) == SIGSYS ? " (a system call its sandbox forbids)" : ""));
    }
    return reply.status();
  }
  Reader r(reply->payload);
  switch (reply->kind) {
    case Kind::kOk:
      return std::move(reply->payload);
    case Kind::kRefused: {
      RefusedOp refused;
      refused.op = r.Bytes();
      refused.method = r.Bytes();
      if (!r.done() || !IsName(refused.op) || !IsName(refused.method)) break;
      // Written here from names only: shareable.
      return Shareable(absl::InvalidArgumentError(
          absl::StrCat(where_, ": refused: ", RefusedOpMessage(refused))));
    }
    case Kind::kError: {
      const uint32_t code = r.U32();
      const std::string message = r.Bytes();
      if (!r.done() || code == 0 || code > 16) break;
      // The worker's words: not shareable (a module may raise with anything).
      return Status(static_cast<absl::StatusCode>(code),
                    absl::StrCat(where_, ": ", Printable(message)));
    }
    default:
      break;
  }
  Stop();
  return absl::InternalError(absl::StrCat(where_, ": the sandbox sent a malformed reply"));
}

Status SandboxSession::CheckLayout(const ModelState& state) const {
  return Annotate(state.CheckSameLayout(layout_), absl::StrCat(where_, ": the sandbox's state"));
}

StatusOr<SandboxSession::Loaded> SandboxSession::Load(const std::string& module_bytes,
                                                      const std::vector<int64_t>& input_shape,
                                                      int num_classes) {
  Writer w;
  w.Bytes(module_bytes).I64s(input_shape).I64(num_classes).U32(sandbox_.check_ops ? 1 : 0);
  // The module's weights are in its file: a reply can be no larger.
  module_bytes_ = module_bytes.size();
  FEDSILO_ASSIGN_OR_RETURN(std::string reply, Call(static_cast<uint32_t>(Kind::kLoad), w.str(),
                                                   2 * module_bytes_ + kSlack));
  Reader r(reply);
  Loaded loaded;
  const std::string state = r.Bytes();
  loaded.num_parameters = r.I64();
  loaded.num_buffers = r.I64();
  if (!r.done()) return absl::InternalError(absl::StrCat(where_, ": a malformed load reply"));
  FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(state, where_));
  for (const Tensor& t : file.state.tensors()) {
    if (t.dtype() != DType::kFloat32) {
      return absl::InternalError(absl::StrCat(where_, ": the sandbox sent a tensor not float32"));
    }
  }
  layout_ = file.state;
  state_bytes_ = SerializeModelState(layout_).size();
  loaded.state = std::move(file.state);
  return loaded;
}

Status SandboxSession::SetState(const ModelState& state) {
  FEDSILO_RETURN_IF_ERROR(Annotate(state.CheckSameLayout(layout_), "model state"));
  return Call(static_cast<uint32_t>(Kind::kSetState), SerializeModelState(state), 64).status();
}

StatusOr<ModelState> SandboxSession::GetState() {
  FEDSILO_ASSIGN_OR_RETURN(std::string reply,
                           Call(static_cast<uint32_t>(Kind::kGetState), "", state_bytes_ + kSlack));
  FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(reply, where_));
  FEDSILO_RETURN_IF_ERROR(CheckLayout(file.state));
  return std::move(file.state);
}

StatusOr<std::unique_ptr<SandboxedLayers>> SandboxedLayers::Load(
    const Sandbox& sandbox, std::string where, const std::string& module_bytes,
    const std::string& submodule, int64_t inputs, int64_t outputs, const TrainingConfig& training) {
  auto layers = std::unique_ptr<SandboxedLayers>(new SandboxedLayers());
  layers->submodule_ = submodule;
  layers->inputs_ = inputs;
  layers->outputs_ = outputs;
  FEDSILO_ASSIGN_OR_RETURN(layers->session_, SandboxSession::Start(sandbox, std::move(where)));
  SandboxSession& session = *layers->session_;
  Writer w;
  w.Bytes(module_bytes).Bytes(submodule).I64(inputs).I64(outputs);
  w.U32(static_cast<uint32_t>(training.optimizer))
      .F64(training.learning_rate)
      .F64(training.momentum)
      .F64(training.weight_decay)
      .U32(sandbox.check_ops ? 1 : 0);
  // The submodule's weights are in the module's file: a reply can be no
  // larger.
  session.module_bytes_ = module_bytes.size();
  FEDSILO_ASSIGN_OR_RETURN(std::string reply,
                           session.Call(static_cast<uint32_t>(Kind::kSplitLoad), w.str(),
                                        2 * module_bytes.size() + kSlack));
  Reader r(reply);
  ScriptedMisfit misfit;
  const uint32_t problem = r.U32();
  misfit.output_shape = r.I64s();
  const std::string state = r.Bytes();
  layers->num_parameters_ = r.I64();
  // A shape goes into a message that leaves the silo: a few small numbers.
  bool shape_ok = misfit.output_shape.size() <= 4;
  for (int64_t d : misfit.output_shape) shape_ok = shape_ok && d >= 0 && d <= (int64_t{1} << 20);
  if (!r.done() || problem > ScriptedMisfit::kNoParameters || !shape_ok) {
    return absl::InternalError(absl::StrCat(session.where_, ": a malformed load reply"));
  }
  misfit.problem = static_cast<ScriptedMisfit::Problem>(problem);
  if (misfit.problem != ScriptedMisfit::kFits) {
    // Written here from the problem and a shape: shareable.
    return Shareable(
        absl::InvalidArgumentError(ScriptedMisfitMessage(misfit, submodule, inputs, outputs)));
  }
  FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(state, session.where_));
  for (const Tensor& t : file.state.tensors()) {
    if (t.dtype() != DType::kFloat32) {
      return absl::InternalError(
          absl::StrCat(session.where_, ": the sandbox sent a tensor not float32"));
    }
  }
  if (file.state.tensors().empty() || layers->num_parameters_ < 1) {
    return absl::InternalError(absl::StrCat(session.where_, ": a malformed load reply"));
  }
  session.layout_ = std::move(file.state);
  session.state_bytes_ = SerializeModelState(session.layout_).size();
  return layers;
}

StatusOr<std::vector<float>> SandboxedLayers::Forward(absl::Span<const float> x, int64_t rows,
                                                      bool train) {
  if (rows < 1 || x.size() != static_cast<size_t>(rows * inputs_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", rows, " rows of ", inputs_, " values (", rows * inputs_, "), got ", x.size()));
  }
  pass_rows_ = 0;
  Writer w;
  w.I64(rows).U32(train ? 1 : 0).Floats(x.data(), x.size());
  const size_t values = static_cast<size_t>(rows * outputs_);
  FEDSILO_ASSIGN_OR_RETURN(std::string reply,
                           session_->Call(static_cast<uint32_t>(Kind::kSplitForward), w.str(),
                                          4 * static_cast<uint64_t>(values) + kSlack));
  Reader r(reply);
  std::vector<float> out = r.Floats();
  if (!r.done() || out.size() != values) {
    return absl::InternalError(
        absl::StrCat(session_->where_, ": the sandbox sent outputs of another size"));
  }
  for (float v : out) {
    if (!std::isfinite(v)) return absl::InternalError("the model's output is not finite");
  }
  if (train) pass_rows_ = rows;
  return out;
}

StatusOr<std::vector<float>> SandboxedLayers::Backward(absl::Span<const float> output_gradient) {
  if (pass_rows_ == 0) return absl::FailedPreconditionError("no training pass to go back through");
  const int64_t rows = pass_rows_;
  if (output_gradient.size() != static_cast<size_t>(rows * outputs_)) {
    return absl::InvalidArgumentError(absl::StrCat("expected a gradient of ", rows, " rows of ",
                                                   outputs_, " values, got ",
                                                   output_gradient.size(), " values"));
  }
  pass_rows_ = 0;
  Writer w;
  w.Floats(output_gradient.data(), output_gradient.size());
  FEDSILO_ASSIGN_OR_RETURN(
      std::string reply,
      session_->Call(static_cast<uint32_t>(Kind::kSplitBackward), w.str(), kSlack));
  Reader r(reply);
  std::vector<float> back = r.Floats();
  // A bottom model gives no gradient for its inputs (the party's columns).
  if (!r.done() || !back.empty()) {
    return absl::InternalError(absl::StrCat(session_->where_, ": a malformed backward reply"));
  }
  return back;
}

StatusOr<ModelState> SandboxedLayers::Weights() {
  FEDSILO_ASSIGN_OR_RETURN(ModelState state, session_->GetState());
  for (const Tensor& t : state.tensors()) {
    for (float v : t.floats()) {
      if (!std::isfinite(v)) {
        return absl::InternalError(absl::StrCat(session_->where_, ": the sandbox sent weight '",
                                                t.name(), "' with values that are not finite"));
      }
    }
  }
  return state;
}

Status SandboxedLayers::SetLearningRate(double learning_rate) {
  Writer w;
  w.F64(learning_rate);
  return session_->Call(static_cast<uint32_t>(Kind::kSplitRate), w.str(), kSlack).status();
}

std::string SandboxedLayers::Describe() const {
  return absl::StrCat("torchscript '", submodule_, "' ", inputs_, "->", outputs_, " (sandboxed), ",
                      num_parameters_, " parameters");
}

StatusOr<uint64_t> SandboxSession::DatasetId(const DataView& data) {
  for (const auto& [dataset, id] : sent_) {
    if (dataset == data.dataset) return id;
  }
  const Dataset& d = *data.dataset;
  const uint64_t id = sent_.size() + 1;
  Writer w;
  w.U64(id).I64s(d.example_shape).I64(d.num_classes).I64s(d.labels);
  if (d.has_byte_features()) {
    const size_t n = static_cast<size_t>(d.size() * d.feature_size());
    w.U32(1)
        .F64(d.byte_scale)
        .Bytes(absl::string_view(
            reinterpret_cast<const char*>(d.byte_features->data() + d.byte_offset), n));
  } else {
    w.U32(0).Floats(d.features.data(), d.features.size());
  }
  FEDSILO_RETURN_IF_ERROR(Call(static_cast<uint32_t>(Kind::kData), w.str(), 64).status());
  sent_.emplace_back(data.dataset, id);  // kept alive: its address stays its own
  return id;
}

StatusOr<TrainStats> SandboxSession::Train(const ModelState* start, const DataView& data,
                                           const TrainingConfig& config, uint64_t seed,
                                           const LocalObjective& objective, ModelState* trained) {
  if (start != nullptr)
    FEDSILO_RETURN_IF_ERROR(Annotate(start->CheckSameLayout(layout_), "model state"));
  FEDSILO_ASSIGN_OR_RETURN(uint64_t id, DatasetId(data));
  Writer w;
  w.Bytes(start != nullptr ? SerializeModelState(*start) : std::string());
  w.U64(id).I64s(data.indices);
  w.I64(config.local_epochs).I64(config.batch_size).U32(static_cast<uint32_t>(config.optimizer));
  w.F64(config.learning_rate).F64(config.momentum).F64(config.weight_decay).U64(seed);
  w.F64(objective.proximal_mu);
  w.Bytes(objective.gradient_correction != nullptr
              ? SerializeModelState(*objective.gradient_correction)
              : std::string());
  FEDSILO_ASSIGN_OR_RETURN(
      std::string reply, Call(static_cast<uint32_t>(Kind::kTrain), w.str(), state_bytes_ + kSlack));
  Reader r(reply);
  TrainStats stats;
  stats.examples = r.I64();
  stats.steps = r.I64();
  stats.loss = r.F64();
  stats.accuracy = r.F64();
  const std::string state = r.Bytes();
  if (!r.done() || stats.examples != data.size() || stats.steps < 0) {
    return absl::InternalError(absl::StrCat(where_, ": a malformed training reply"));
  }
  FEDSILO_ASSIGN_OR_RETURN(ModelFile file, ParseModelState(state, where_));
  FEDSILO_RETURN_IF_ERROR(CheckLayout(file.state));
  // A value that is not finite could say something by where it is: refused
  // here, before it reaches a mask or an aggregate.
  FEDSILO_RETURN_IF_ERROR(Annotate(file.state.CheckFinite(), absl::StrCat(where_, ": trained")));
  *trained = std::move(file.state);
  return stats;
}

StatusOr<std::vector<float>> SandboxSession::Predict(const ModelState* weights,
                                                     const DataView& data, int num_classes) {
  if (weights != nullptr)
    FEDSILO_RETURN_IF_ERROR(Annotate(weights->CheckSameLayout(layout_), "model state"));
  FEDSILO_ASSIGN_OR_RETURN(uint64_t id, DatasetId(data));
  Writer w;
  w.Bytes(weights != nullptr ? SerializeModelState(*weights) : std::string());
  w.U64(id).I64s(data.indices);
  const uint64_t expected = static_cast<uint64_t>(data.size()) * static_cast<uint64_t>(num_classes);
  FEDSILO_ASSIGN_OR_RETURN(std::string reply, Call(static_cast<uint32_t>(Kind::kPredict), w.str(),
                                                   16 + expected * sizeof(float)));
  Reader r(reply);
  std::vector<float> logp = r.Floats();
  if (!r.done() || logp.size() != expected) {
    return absl::InternalError(absl::StrCat(where_, ": a malformed prediction reply"));
  }
  return logp;
}

StatusOr<std::string> SandboxSession::Save() {
  FEDSILO_ASSIGN_OR_RETURN(std::string reply, Call(static_cast<uint32_t>(Kind::kSave), "",
                                                   2 * module_bytes_ + state_bytes_ + kSlack));
  return reply;
}

Status InstallSandboxFilter() {
  // Default: refuse (EPERM), so that a call not listed fails softly; the
  // ones only an escape would make end the process.
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  int rc = 0;
  const auto allow = [&](int nr) {
    rc = rc != 0 ? rc : ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
  };
  for (int nr :
       {// The socket it was given, and memory.
        SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(recvfrom),
        SCMP_SYS(sendto), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg), SCMP_SYS(poll), SCMP_SYS(ppoll),
        SCMP_SYS(close), SCMP_SYS(fstat), SCMP_SYS(lseek), SCMP_SYS(munmap), SCMP_SYS(mremap),
        SCMP_SYS(madvise), SCMP_SYS(brk),
        // Threads, time, signals, the process itself.
        SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(get_robust_list), SCMP_SYS(rseq),
        SCMP_SYS(set_tid_address), SCMP_SYS(sched_yield), SCMP_SYS(clock_gettime),
        SCMP_SYS(clock_getres), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
        SCMP_SYS(gettimeofday), SCMP_SYS(getrandom), SCMP_SYS(getpid), SCMP_SYS(gettid),
        SCMP_SYS(getppid), SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid),
        SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
        SCMP_SYS(sigaltstack), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(membarrier),
        SCMP_SYS(sysinfo), SCMP_SYS(uname), SCMP_SYS(getrlimit), SCMP_SYS(get_mempolicy),
        SCMP_SYS(restart_syscall)}) {
    allow(nr);
  }
  const scmp_datum_t self = static_cast<scmp_datum_t>(::getpid());
  // Memory, executable too: oneDNN compiles its convolution kernels at run
  // time (refusing PROT_EXEC breaks conv2d).
  allow(SCMP_SYS(mmap));
  allow(SCMP_SYS(mprotect));
  // fcntl only on a descriptor's flags: not F_SETOWN and F_SETSIG, with
  // which a socket's signal could reach any process of the same user.
  for (scmp_datum_t cmd : {F_GETFD, F_SETFD, F_GETFL, F_SETFL}) {
    if (rc == 0) {
      rc = ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 1, SCMP_A1(SCMP_CMP_EQ, cmd));
    }
  }
  // Scheduling and limits of itself only (pid 0 or its own); limits read
  // only; signals (abort) at itself only. Reading a CPU mask is allowed for
  // any thread id: glibc's pthread_getattr_np reads its thread's by tid
  // (sanitizer runtimes call it in every new thread), and a mask says little.
  if (rc == 0) rc = ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(sched_getaffinity), 0);
  for (int nr :
       {SCMP_SYS(sched_setaffinity), SCMP_SYS(sched_getparam), SCMP_SYS(sched_getscheduler)}) {
    for (scmp_datum_t pid : {scmp_datum_t{0}, self}) {
      if (rc == 0) rc = ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, pid));
    }
  }
  for (scmp_datum_t pid : {scmp_datum_t{0}, self}) {
    if (rc == 0) {
      rc = ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 2,
                              SCMP_A0(SCMP_CMP_EQ, pid), SCMP_A2(SCMP_CMP_EQ, 0));
    }
  }
  if (rc == 0) {
    rc = ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_EQ, self));
  }
  // New threads, never new processes: clone only with CLONE_THREAD; clone3's
  // flags sit in memory a filter cannot read, so it is "not implemented" and
  // the C library falls back to clone.
  if (rc == 0) {
    rc = ::seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                            SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  }
  if (rc == 0) rc = ::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  // Starting a program, opening a socket or tracing: an escape attempt.
  for (int nr : {SCMP_SYS(execve),
                 SCMP_SYS(execveat),
                 SCMP_SYS(socket),
                 SCMP_SYS(socketpair),
                 SCMP_SYS(connect),
                 SCMP_SYS(bind),
                 SCMP_SYS(listen),
                 SCMP_SYS(accept),
                 SCMP_SYS(accept4),
                 SCMP_SYS(ptrace),
                 SCMP_SYS(process_vm_readv),
                 SCMP_SYS(process_vm_writev),
                 SCMP_SYS(fork),
                 SCMP_SYS(vfork),
                 SCMP_SYS(io_uring_setup),
                 SCMP_SYS(bpf),
                 SCMP_SYS(unshare),
                 SCMP_SYS(setns),
                 SCMP_SYS(mount),
                 SCMP_SYS(kill)}) {
    if (rc == 0) rc = ::seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, nr, 0);
  }
  // Every thread of the process, not only this one.
  if (rc == 0) rc = ::seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc == 0) rc = ::seccomp_load(ctx);
  ::seccomp_release(ctx);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("installing the sandbox's system-call filter: ", std::strerror(-rc)));
  }
  return absl::OkStatus();
}

}  // namespace fedsilo::ml
