#include "transport/grpc_logging.h"

#include <gmock/gmock.h>
#include <grpc/support/log.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>
#include <thread>

namespace fedsilo::transport {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Captures what fedsilo logs while it lives.
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("captured", sink);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

constexpr char kPlaintext[] =
    "Handshake failed with fatal error SSL_ERROR_SSL: error:0A00010B:SSL routines::wrong "
    "version number.";

TEST(GrpcLoggingTest, TheTracersReadLineNamesThePeerOfThisThreadOnly) {
  RouteGrpcLogs(/*peer_addresses=*/true);
  HandleGrpcLogLine(GPR_LOG_SEVERITY_INFO,
                    "READ 0x55d0c8e0 (peer=ipv4:127.0.0.1:50712) error=OK");
  EXPECT_EQ(PeerOfLastIo(), "127.0.0.1:50712");
  std::string elsewhere;
  std::thread([&] { elsewhere = PeerOfLastIo(); }).join();
  EXPECT_EQ(elsewhere, "an unknown address");
  HandleGrpcLogLine(GPR_LOG_SEVERITY_INFO, "READ 0x1 (peer=ipv6:[::1]:4433) error=OK");
  EXPECT_EQ(PeerOfLastIo(), "[::1]:4433");
  // A handshake may go on after a write: the last I/O of the thread counts.
  HandleGrpcLogLine(GPR_LOG_SEVERITY_INFO, "WRITE 0x3 (peer=ipv4:10.9.8.7:1234)");
  EXPECT_EQ(PeerOfLastIo(), "10.9.8.7:1234");
}

TEST(GrpcLoggingTest, AFailedHandshakeIsARefusalInWordsWithThePeer) {
  RouteGrpcLogs(/*peer_addresses=*/true);
  CapturedLog log;
  HandleGrpcLogLine(GPR_LOG_SEVERITY_INFO, "READ 0x2 (peer=ipv4:10.1.2.3:999) error=OK");
  HandleGrpcLogLine(GPR_LOG_SEVERITY_ERROR, kPlaintext);
  HandleGrpcLogLine(GPR_LOG_SEVERITY_ERROR,
                    "Handshake failed with fatal error SSL_ERROR_SSL: error:0A0000C7:SSL "
                    "routines::peer did not return a certificate.");
  HandleGrpcLogLine(GPR_LOG_SEVERITY_ERROR,
                    "Handshake failed with fatal error SSL_ERROR_SSL: error:1:SSL "
                    "routines::odd\n[warning] forged line.");
  const std::string text = log.text();
  EXPECT_THAT(text, HasSubstr("refused a connection from 10.1.2.3:999: it does not speak TLS"));
  EXPECT_THAT(text, HasSubstr("refused a connection from 10.1.2.3:999: it presented no "
                              "certificate"));
  // OpenSSL's words are escaped: a line break cannot start a line of its own.
  EXPECT_THAT(text, HasSubstr("its TLS handshake failed (odd\\n[warning] forged line)"));
  // The tracer's own lines and the raw OpenSSL text stay at debug level.
  EXPECT_THAT(text, Not(HasSubstr("READ 0x2")));
  EXPECT_THAT(text, Not(HasSubstr("SSL_ERROR_SSL")));
}

TEST(GrpcLoggingTest, AFloodOfRefusedConnectionsIsCutToABurstAMinute) {
  RouteGrpcLogs(/*peer_addresses=*/true);
  CapturedLog log;
  // Plaintext clients and refused certificates share the limit.
  for (int i = 0; i < 30; ++i) HandleGrpcLogLine(GPR_LOG_SEVERITY_ERROR, kPlaintext);
  for (int i = 0; i < 30; ++i) LogRefusedConnection("refused a connection (certificate)");
  const std::string text = log.text();
  size_t lines = 0;
  for (size_t at = text.find("refused a connection"); at != std::string::npos;
       at = text.find("refused a connection", at + 1)) {
    ++lines;
  }
  // Earlier tests of this process may have used part of this minute's burst.
  EXPECT_LE(lines, 20u);
  EXPECT_GE(lines, 1u);
}

}  // namespace
}  // namespace fedsilo::transport
