// What the orchestrator and a silo say to each other in one round, independent
// of how it travels (in-process call now; gRPC messages mirror these).
#ifndef FEDSILO_TRANSPORT_MESSAGES_H_
#define FEDSILO_TRANSPORT_MESSAGES_H_

#include <cstdint>
#include <map>
#include <string>

#include "core/job_config.h"
#include "core/model_state.h"

namespace fedsilo::transport {

// Orchestrator -> silo: train on your data starting from `global`.
struct FitRequest {
  std::string run_id;
  int round = 0;                       // 1-based
  uint64_t seed = 0;                   // the silo derives its shuffling from it
  const JobConfig* job = nullptr;      // model and training settings; outlives the call
  const ModelState* global = nullptr;  // outlives the call
};

// Silo -> orchestrator: the update and what the silo measured.
struct FitReply {
  ModelState update;         // local model minus the global model
  int64_t num_examples = 0;  // training examples used; the aggregation weight
  // "train_loss", "train_accuracy", "test_loss", "test_accuracy", and for
  // binary tasks "test_precision", "test_recall", "test_auc".
  std::map<std::string, double> metrics;
};

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_MESSAGES_H_
