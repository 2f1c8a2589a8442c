// A silo's Connect stream driven by hand, for tests that play a silo (or
// something pretending to be one): connected over `channel`, its hello
// (offering "digits") already sent.
#ifndef FEDSILO_TESTS_SILO_STREAM_H_
#define FEDSILO_TESTS_SILO_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>

#include "fedsilo/v1/federation.grpc.pb.h"

namespace fedsilo::testing_util {

struct HandSiloStream {
  // `deadline` zero: the stream has none.
  explicit HandSiloStream(const std::shared_ptr<grpc::Channel>& channel,
                          std::chrono::seconds deadline = std::chrono::seconds(0))
      : stub(fedsilo::v1::Orchestrator::NewStub(channel)) {
    if (deadline.count() > 0) context.set_deadline(std::chrono::system_clock::now() + deadline);
    stream = stub->Connect(&context);
    fedsilo::v1::SiloMessage hello;
    hello.mutable_hello()->add_datasets("digits");
    hello_sent = stream->Write(hello);
  }

  std::unique_ptr<fedsilo::v1::Orchestrator::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<
      grpc::ClientReaderWriter<fedsilo::v1::SiloMessage, fedsilo::v1::OrchestratorMessage>>
      stream;
  bool hello_sent = false;
};

}  // namespace fedsilo::testing_util

#endif  // FEDSILO_TESTS_SILO_STREAM_H_
