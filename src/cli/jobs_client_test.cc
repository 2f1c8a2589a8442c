#include "cli/jobs_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/user_commands.h"
#include "secure/provisioner.h"

namespace fedsilo::cli {
namespace {

using std::chrono::seconds;
using std::chrono::system_clock;

// Room, in seconds, for a slow machine between making a context and reading
// its deadline.
constexpr double kSlack = 2;

// A TCP listener on 127.0.0.1 that accepts connections and never says a word:
// a TLS handshake with it, and so any call, waits for ever. Stop() (or the
// destructor) closes every connection.
class SilentServer {
 public:
  SilentServer() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        listen(listener_, 16) != 0 ||
        getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return;
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] {
      while (!stopping_) {
        pollfd ready{listener_, POLLIN, 0};
        if (poll(&ready, 1, 50) <= 0) continue;
        const int connection = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (connection < 0) continue;
        connections_.push_back(connection);
        ++accepted_;
      }
    });
  }
  ~SilentServer() { Stop(); }

  int port() const { return port_; }          // 0 when the listener could not be set up
  int accepted() const { return accepted_; }  // connections so far

  void Stop() {
    stopping_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (int connection : connections_) close(connection);
    connections_.clear();
    if (listener_ >= 0) close(listener_);
    listener_ = -1;
  }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<int> connections_;  // the acceptor's until it has been joined
};

class JobsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/jobs_client_test." + std::to_string(getpid()) + "." +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    secure::FederationSpec spec;
    spec.name = "deadlines";
    spec.participants = {{"alice", secure::ParticipantKind::kUser}};
    ASSERT_TRUE(secure::ProvisionFederation(spec, dir_, system_clock::now()).ok());
    options_.kit_dir = dir_ + "/alice";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The seconds from now to a context's deadline.
  static double Left(const grpc::ClientContext& context) {
    return std::chrono::duration<double>(context.deadline() - system_clock::now()).count();
  }

  std::string dir_;
  UserOptions options_;
};

TEST_F(JobsClientTest, ACallsDeadlineIsThirtySecondsByDefault) {
  StatusOr<JobsClient> client = JobsClient::Connect(options_);  // default options
  ASSERT_TRUE(client.ok()) << client.status();
  const double left = Left(*client->Context());
  EXPECT_GT(left, 30 - kSlack);
  EXPECT_LE(left, 30);
}

TEST_F(JobsClientTest, ACallsDeadlineFollowsTheOptions) {
  // The control for the test above: the deadline measured is the options'.
  options_.timeout_seconds = 5;
  StatusOr<JobsClient> client = JobsClient::Connect(options_);
  ASSERT_TRUE(client.ok()) << client.status();
  const double left = Left(*client->Context());
  EXPECT_GT(left, 5 - kSlack);
  EXPECT_LE(left, 5);
}

TEST_F(JobsClientTest, ADownloadsDeadlineIsADayWhateverTheCallsDeadline) {
  for (int timeout : {30, 1}) {
    SCOPED_TRACE(timeout);
    options_.timeout_seconds = timeout;
    StatusOr<JobsClient> client = JobsClient::Connect(options_);
    ASSERT_TRUE(client.ok()) << client.status();
    const double left = Left(*client->DownloadContext());
    EXPECT_GT(left, 24 * 3600 - kSlack);
    EXPECT_LE(left, 24 * 3600);
  }
}

// Runs `command` on a thread of its own, which a test that fails while it
// still runs leaves to finish on its own (so it must own what it uses).
std::future<Status> Start(std::function<Status()> command) {
  auto done = std::make_shared<std::promise<Status>>();
  std::future<Status> result = done->get_future();
  std::thread([command = std::move(command), done] { done->set_value(command()); }).detach();
  return result;
}

TEST_F(JobsClientTest, ACommandAgainstAServerThatNeverAnswersFailsAtItsDeadline) {
  // The deadline is shortened to 1 s to keep the test short; that 30 s is
  // the default is the first test's business.
  auto server = std::make_shared<SilentServer>();
  ASSERT_NE(server->port(), 0);
  options_.orchestrator = "127.0.0.1:" + std::to_string(server->port());
  options_.timeout_seconds = 1;
  const auto start = std::chrono::steady_clock::now();
  std::future<Status> result = Start([options = options_, server] { return JobsCommand(options); });
  ASSERT_EQ(result.wait_for(seconds(15)), std::future_status::ready)
      << "`jobs` still waits after 15 s";
  const Status status = result.get();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_NE(status.message().find("cannot reach the orchestrator at " + options_.orchestrator),
            std::string::npos)
      << status;
  // It ended at its deadline, not before, and on a connection that was made.
  EXPECT_GE(took, seconds(1));
  EXPECT_GT(server->accepted(), 0);
}

TEST_F(JobsClientTest, ADownloadOutlivesTheCallsDeadline) {
  // With the calls' deadline at 1 s, a download on it fails within a second
  // (the test above); one on its own deadline still waits 3 s later. Shows
  // that DownloadCommand uses DownloadContext(), which the unit test cannot.
  auto server = std::make_shared<SilentServer>();
  ASSERT_NE(server->port(), 0);
  options_.orchestrator = "127.0.0.1:" + std::to_string(server->port());
  options_.timeout_seconds = 1;
  const std::string out = dir_ + "/model.fsm";
  std::future<Status> result =
      Start([options = options_, out, server] { return DownloadCommand(options, "job-1", out); });
  // Three times the call's deadline: a download on it would have failed.
  if (result.wait_for(seconds(3)) == std::future_status::ready) {
    FAIL() << "the download ended within 3 s: " << result.get();
  }
  EXPECT_GT(server->accepted(), 0);
  // The server going away ends it, and no partial file is left behind.
  server->Stop();
  ASSERT_EQ(result.wait_for(seconds(30)), std::future_status::ready)
      << "the download still waits after the server went away";
  const Status status = result.get();
  EXPECT_FALSE(status.ok());
  EXPECT_FALSE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace fedsilo::cli
