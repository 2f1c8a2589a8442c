// Writes the seed inputs of each fuzz target into fuzz/corpus/<target>/:
// well-formed examples the fuzzer mutates from. Run by hand when a format
// changes (scripts/fuzz --seeds); the seeds are kept in the repository.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/model_state_file.h"
#include "script.h"
#include "secure/audit_log.h"
#include "secure/certificate_authority.h"
#include "secure/secagg.h"
#include "secure/storage_keys.h"

namespace {

namespace fs = std::filesystem;
namespace fuzz = fedsilo::fuzz;
namespace secure = fedsilo::secure;
std::string root;

void Seed(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(root + "/" + target);
  std::ofstream(root + "/" + target + "/" + name, std::ios::binary) << bytes;
}

// Parts as fuzz::Parts reads them: a 2-byte little-endian length, then bytes.
std::string Parts(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) {
    out.push_back(static_cast<char>(p.size() & 0xff));
    out.push_back(static_cast<char>((p.size() >> 8) & 0xff));
    out += p;
  }
  return out;
}

fedsilo::ModelState Small() {
  fedsilo::ModelState s;
  (void)s.Add(fedsilo::Tensor::FromFloats("w", {2, 2}, {1, 2, 3, 4}));
  (void)s.Add(fedsilo::Tensor::FromFloats("b", {2}, {0.5f, -0.5f}));
  return s;
}

void WriteModelStateSeeds() {
  Seed("model_state", "small.fsm",
       fedsilo::SerializeModelState(Small(), {{"round", "3"}, {"job", "x"}}));
  Seed("model_state", "empty.fsm", fedsilo::SerializeModelState(fedsilo::ModelState()));
}

void WriteSealedFileSeeds() {
  secure::KeyRing ring;
  ring.current = "k1";
  ring.keys["k1"].fill(7);
  secure::AeadFileSealer sealer(ring);
  Seed("sealed_file", "model.sealed",
       sealer.Seal(fedsilo::SerializeModelState(Small()), "model.fsm"));
  Seed("sealed_file", "text.sealed", sealer.Seal("{\"runs\": []}", "model.fsm"));
}

// The example jobs of the source tree, and one with every privacy feature.
void WriteJobConfigSeeds(const std::string& source) {
  for (const char* job :
       {"digits.yaml", "breast-cancer.yaml", "mnist-cnn-noniid.yaml", "fraud.yaml"}) {
    fedsilo::StatusOr<std::string> text = fedsilo::ReadFile(source + "/examples/" + job);
    if (text.ok()) Seed("job_config", job, *text);
  }
  Seed("job_config", "secure.yaml",
       "data: {dataset: digits}\nfederation: {silos: 5}\n"
       "privacy: {secure_aggregation: {threshold: 4}, dp: {mode: central, noise_multiplier: 1}}\n"
       "strategy: {name: fedadam}\ntraining: {rounds: 3, optimizer: adam}\n");
}

void WriteFederationSpecSeeds() {
  Seed("federation_spec", "federation.yaml",
       "name: hospitals\ncertificate_days: 90\norchestrator: {hosts: [localhost, 127.0.0.1], "
       "port: 9443}\nparticipants:\n  - {name: hospital-a, kind: silo}\n"
       "  - {name: alice, kind: user}\n");
}

void WriteChunksSeeds() {
  Seed("chunks", "two.bin",
       std::string("\x0a\x00", 2) + Parts({"\x00"
                                           "abcde",
                                           "\x01"
                                           "fghij"}));
  Seed("chunks", "short.bin",
       std::string("\x0a\x00", 2) + Parts({"\x01"
                                           "abc"}));
}

// An honest secure-aggregation round among three silos, recorded.
void WriteSecAggSeeds() {
  const std::vector<std::string> names = {"silo-1", "silo-2", "silo-3"};
  std::map<std::string, std::unique_ptr<secure::SecAggSilo>> silos;
  for (const auto& n : names) {
    silos[n] = std::make_unique<secure::SecAggSilo>(n);
    silos[n]->SetInput("run", 1, Small(), 5);
  }
  secure::SecAggParams params;
  params.threshold = 2;
  auto round = secure::SecAggRound::Create("run", 1, params, names, Small());
  std::vector<std::string> to_silo1, replies;
  auto ask = [&](const std::map<std::string, std::string>& requests, auto accept) {
    for (const auto& n : names) {
      const std::string& request = requests.at(n);
      if (n == "silo-1") to_silo1.push_back(request);
      fedsilo::StatusOr<std::string> reply = silos[n]->Handle("run", 1, request);
      if (!reply.ok()) continue;
      replies.push_back(*reply);
      (void)accept(n, *reply);
    }
  };
  auto all = [&](const std::string& r) {
    std::map<std::string, std::string> m;
    for (const auto& n : names) m[n] = r;
    return m;
  };
  ask(all(round->AdvertiseRequest()),
      [&](auto& s, auto& r) { return round->AcceptAdvertise(s, r); });
  ask(all(*round->ShareKeysRequest()),
      [&](auto& s, auto& r) { return round->AcceptShareKeys(s, r); });
  ask(*round->MaskedInputRequests(),
      [&](auto& s, auto& r) { return round->AcceptMaskedInput(s, r); });
  ask(all(*round->ConsistencyRequest()),
      [&](auto& s, auto& r) { return round->AcceptConsistency(s, r); });
  ask(all(*round->UnmaskRequest()), [&](auto& s, auto& r) { return round->AcceptUnmask(s, r); });
  Seed("secagg", "silo-requests.bin", std::string("\x01", 1) + Parts(to_silo1));
  Seed("secagg", "silo-replies.bin", std::string("\x00", 1) + Parts(replies));
}

// A CRL and a silo's certificate, and the audit head that certificate signs:
// one group, since both targets' seeds come from the same issued certificate.
void WriteCrlAndAuditHeadSeeds() {
  auto ca = secure::CertificateAuthority::Create("fuzz", 30, std::chrono::system_clock::now());
  auto issued = (*ca)->Issue({"silo-1", secure::ParticipantKind::kSilo, {}, 10},
                             std::chrono::system_clock::now());
  auto peer = secure::VerifyCertificate(issued->certificate_pem, (*ca)->certificate_pem(),
                                        std::chrono::system_clock::now());
  Seed("crl", "crl.pem",
       *(*ca)->MakeCrl({{peer->serial, std::chrono::system_clock::now()}},
                       std::chrono::system_clock::now()));
  Seed("crl", "cert.pem", issued->certificate_pem);

  // A silo's signed audit log head, as the orchestrator keeps it.
  secure::SignedAuditHead head;
  head.federation = "fuzz";
  head.participant = "silo-1";
  head.head = {42, std::string(64, 'a')};
  head.unix_millis = 1796400000000;
  head.certificate_pem = issued->certificate_pem;
  auto signer = secure::MessageSigner::Create(issued->private_key_pem);
  (void)secure::SignAuditHead(head, **signer);
  Seed("audit_head", "head.jsonl", secure::AuditHeadLine(head, 1796400000001));
}

// A silo's policy, dataset catalog and ledger.
void WriteSiloConfigSeeds() {
  const std::string policy =
      "allow_any_module: false\n"
      "defaults: {max_epsilon: 10, delta: 1e-5, min_silos: 2}\n"
      "datasets:\n"
      "  digits:\n"
      "    require_local_dp: true\n"
      "    require_secure_aggregation: true\n"
      "    max_evaluations_per_run: 20\n"
      "    statistics: {min_count: 10, share_min_max: false}\n"
      "    share_train_metrics: false\n"
      "    export_metrics: false\n"
      "    allowed_models: [sha256:" +
      std::string(64, 'a') + "]\n";
  const std::string catalog =
      "datasets:\n"
      "  digits: {builtin: digits, share: job}\n"
      "  patients: {csv: 'data/{silo}.csv', label: outcome, features: [age, kind],\n"
      "             categorical: [kind], missing: impute}\n"
      "  scans: {idx: scans/}\n";
  const std::string ledger =
      R"({"version": 2, "entries": [{"dataset": "digits", "run_id": "r1", "job_digest": "sha256:j",)"
      R"( "statistics_digest": "", "dp": {"accountant": "rdp-sampled-gaussian/default-orders",)"
      R"( "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 40, "planned_steps": 80},)"
      R"( "epsilon": 1.5, "planned_epsilon": 2.1, "delta": 1e-05, "evaluations": 2,)"
      R"( "secure_aggregation_reveals": [{"round": 1, "model": "sha256:m", "survivors": ["a", "b"]}],)"
      R"( "first": 1795000000, "last": 1795000100}]})";
  Seed("silo_config", "all.bin", Parts({policy, catalog, ledger}));
  Seed("silo_config", "empty.bin",
       Parts({"", "datasets: {}\n", R"({"version": 2, "entries": []})"}));
}

// A CSV table and IDX images with their labels.
void WriteTablesSeeds() {
  const std::string csv = "age,kind,label\n31,a,0\n45,b,1\n,a,1\n52.5,b,0\n";
  std::string images = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2};
  images += std::string("\x00\x10\x20\x30\x40\x50\x60\x70", 8);
  std::string labels = {0, 0, 8, 1, 0, 0, 0, 2};
  labels += std::string("\x03\x07", 2);
  Seed("tables", "small.bin", Parts({csv, images, labels}));
  Seed("tables", "numbers.bin", Parts({"1,2,0\n3,4,1\n5,6,2\n", images, labels}));
}

// A silo's stream: an honest round (task, result, upload, a secure step,
// an evaluation that fails, a cancel), then a hostile one.
void WriteSiloStreamSeeds() {
  using fuzz::ScriptWriter;
  using fuzz::StreamOp;
  auto op = [](ScriptWriter& w, StreamOp o) -> ScriptWriter& { return w.Byte(uint8_t(o)); };
  ScriptWriter honest;
  honest.Byte(8).Byte(8);  // the model's and the update's sizes
  op(honest, StreamOp::kReconnect).Byte(0);
  op(honest, StreamOp::kHello).Byte(1).Bytes("digits").Bytes("fedsilo 0.1.0");
  op(honest, StreamOp::kHeartbeat).Small(5);
  op(honest, StreamOp::kFit).Byte(0).Byte(0);
  op(honest, StreamOp::kResult)
      .Byte(fuzz::kEchoAll)
      .Hint()
      .Small(40)
      .Byte(1)
      .Bytes("train_loss")
      .Small(1)
      .Flag(false);
  op(honest, StreamOp::kFetch);
  op(honest, StreamOp::kUpload).Byte(31).Flag(false);
  op(honest, StreamOp::kSecureStep).Bytes("step").Byte(0);
  op(honest, StreamOp::kSecureReply).Byte(fuzz::kEchoAll).Small(5);
  op(honest, StreamOp::kChunk).Bytes("abcde").Flag(true);
  op(honest, StreamOp::kVerticalStep).Bytes("step");
  op(honest, StreamOp::kSecureReply).Byte(fuzz::kEchoAll).Small(3);
  op(honest, StreamOp::kChunk).Bytes("abc").Flag(true);
  op(honest, StreamOp::kFit).Byte(2).Byte(1);
  op(honest, StreamOp::kFailed).Byte(fuzz::kEchoAll).Bytes("no test rows");
  op(honest, StreamOp::kCancel).Flag(true).Bytes("aborted by alice");
  op(honest, StreamOp::kWhoAmI).Bytes("alice").Byte(1);
  op(honest, StreamOp::kClose);
  Seed("silo_stream", "honest.bin", honest.str());

  ScriptWriter hostile;
  hostile.Byte(8).Byte(8);
  op(hostile, StreamOp::kReconnect).Byte(0);
  op(hostile, StreamOp::kHello).Byte(0).Bytes("");
  op(hostile, StreamOp::kFit).Byte(0).Byte(0);
  op(hostile, StreamOp::kResult).Byte(fuzz::kEchoAll).Byte(6).Byte(30).Small(1).Byte(0).Flag(false);
  op(hostile, StreamOp::kReconnect).Byte(0);
  op(hostile, StreamOp::kHello).Byte(0).Bytes("");
  op(hostile, StreamOp::kFit).Byte(0).Byte(0);
  op(hostile, StreamOp::kResult).Byte(fuzz::kEchoAll).Hint().Small(7).Byte(0).Flag(true);
  op(hostile, StreamOp::kResult).Byte(fuzz::kEchoAll).Hint().Small(8).Byte(0).Flag(true);
  op(hostile, StreamOp::kFetch);
  op(hostile, StreamOp::kUpload).Byte(3).Flag(true).Byte(17);
  op(hostile, StreamOp::kChunk).Bytes("more").Flag(true);
  op(hostile, StreamOp::kSecureReply).Byte(fuzz::kEchoAll).Small(9);
  op(hostile, StreamOp::kReconnect).Byte(2);
  op(hostile, StreamOp::kHello).Byte(0).Bytes("");
  Seed("silo_stream", "hostile.bin", hostile.str());
}

// Users of the Jobs service: alice submits and her job ends; bob, carol
// (a lead) and mallory (a silo) try to take it; then a raw request.
void WriteJobsApiSeeds() {
  using fuzz::JobsOp;
  using fuzz::ScriptWriter;
  auto call = [](ScriptWriter& w, JobsOp o, uint8_t caller) -> ScriptWriter& {
    return w.Byte(uint8_t(o)).Byte(caller);
  };
  const std::string job =
      "name: seed\ndata: {dataset: digits}\nfederation: {silos: [a, b]}\n"
      "training: {rounds: 2}\n";
  ScriptWriter users;
  call(users, JobsOp::kSubmit, 0).Bytes(job).Bytes("");
  call(users, JobsOp::kSubmit, 1).Bytes(job + "model: {torchscript: m.pt}\n").Bytes("TS module");
  call(users, JobsOp::kList, 1);
  call(users, JobsOp::kGet, 3).Flag(false).Byte(0);
  call(users, JobsOp::kLogs, 1).Flag(false).Byte(0).Small(0);
  call(users, JobsOp::kAbort, 1).Flag(false).Byte(0).Bytes("mine now");
  call(users, JobsOp::kFinish, 0).Byte(0).Byte(4);
  call(users, JobsOp::kDownload, 1).Flag(false).Byte(0);
  call(users, JobsOp::kDownload, 2).Flag(false).Byte(0);
  call(users, JobsOp::kDownload, 0).Flag(false).Byte(0);
  call(users, JobsOp::kListRuns, 0).Bytes("default");
  call(users, JobsOp::kGetRun, 0).Flag(false).Byte(0);
  call(users, JobsOp::kAbort, 0).Flag(false).Byte(1).Bytes("");
  // SubmitJobRequest{job_yaml}: field 1, length-delimited.
  const std::string request = std::string("\x0a", 1) + static_cast<char>(job.size()) + job;
  call(users, JobsOp::kRaw, 0).Byte(0).Bytes(request);
  Seed("jobs_api", "users.bin", users.str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR SOURCE_DIR\n");
    return 2;
  }
  root = argv[1];
  const std::string source = argv[2];

  // In this order: the secure-aggregation and certificate seeds draw keys at
  // random.
  WriteModelStateSeeds();
  WriteSealedFileSeeds();
  WriteJobConfigSeeds(source);
  WriteFederationSpecSeeds();
  WriteChunksSeeds();
  WriteSecAggSeeds();
  WriteCrlAndAuditHeadSeeds();
  WriteSiloConfigSeeds();
  WriteTablesSeeds();
  WriteSiloStreamSeeds();
  WriteJobsApiSeeds();

  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
