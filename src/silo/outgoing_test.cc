#include "silo/outgoing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <vector>

namespace fedsilo::silo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Keeps what this process logs while it lives, to check what stays here.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() { spdlog::default_logger()->sinks().pop_back(); }
  std::string Text() const {
    std::string all;
    for (const std::string& line : sink_->last_formatted()) all += line;
    return all;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

// A library's error may quote a record: it leaves as its code and a reason
// naming the silo, and the whole of it goes to the silo's own log.
TEST(OutgoingTest, AnErrorTheSiloCannotVouchForLeavesAsItsCodeAndAGenericReason) {
  LogCapture log;
  const Status raw =
      absl::InternalError("libtorch: bad value 31337.5 in row 17 of /srv/east/patients.csv");
  ASSERT_FALSE(IsShareable(raw));
  const Status out = Outgoing(raw, "east");
  EXPECT_EQ(out.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(IsShareable(out));
  EXPECT_THAT(FullMessage(out), Not(HasSubstr("31337")));
  EXPECT_THAT(FullMessage(out), Not(HasSubstr("patients.csv")));
  EXPECT_THAT(out.message(), HasSubstr("silo 'east': the task failed (INTERNAL)"));
  EXPECT_THAT(out.message(), HasSubstr("the reason stays in the silo's own log"));
  EXPECT_THAT(log.Text(), HasSubstr("31337.5 in row 17 of /srv/east/patients.csv"));
}

// A shareable error leaves as it is, but its private detail stays in the log.
TEST(OutgoingTest, AShareableErrorLeavesWithoutItsPrivateDetail) {
  LogCapture log;
  const Status data = DataError(absl::StatusCode::kInvalidArgument,
                                "row 17, column 'amount': not a number", "east.csv:18: '1,000'");
  const Status out = Outgoing(data, "east");
  EXPECT_EQ(out.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsShareable(out));
  EXPECT_EQ(out.message(), "row 17, column 'amount': not a number");
  EXPECT_EQ(PrivateDetail(out), "");
  EXPECT_THAT(FullMessage(out), Not(HasSubstr("1,000")));
  EXPECT_THAT(log.Text(), HasSubstr("east.csv:18: '1,000'"));

  // One made from the job alone leaves unchanged, and logs nothing.
  LogCapture quiet;
  const Status job = Shareable(absl::FailedPreconditionError("dataset 'digits' is not served"));
  const Status same = Outgoing(job, "east");
  EXPECT_EQ(same.code(), job.code());
  EXPECT_EQ(same.message(), job.message());
  EXPECT_EQ(quiet.Text(), "");
}

TEST(OutgoingTest, OkStaysOk) { EXPECT_TRUE(Outgoing(absl::OkStatus(), "east").ok()); }

}  // namespace
}  // namespace fedsilo::silo
