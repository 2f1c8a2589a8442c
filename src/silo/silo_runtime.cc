#include "silo/silo_runtime.h"

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <limits>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_seal.h"
#include "core/file_util.h"
#include "core/model_state_file.h"
#include "core/yaml_util.h"
#include "ml/dataset_catalog.h"
#include "ml/dataset_reader.h"
#include "ml/partitioner.h"
#include "ml/tabular.h"
#include "secure/audit_log.h"
#include "secure/psi.h"
#include "silo/outgoing.h"
#include "silo/privacy_guard.h"
#include "transport/vertical_wire.h"

namespace fedsilo::silo {

SiloRuntime::SiloRuntime(std::string silo_name, DatasetCatalog catalog, std::string data_dir,
                         PrivacyGuard* guard)
    : silo_name_(std::move(silo_name)),
      catalog_(std::move(catalog)),
      data_dir_(std::move(data_dir)),
      guard_(guard) {}

std::vector<std::string> SiloRuntime::DatasetNames() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : catalog_) names.push_back(name);
  return names;
}

StatusOr<std::string> SiloRuntime::ModulePath(const transport::TaskRequest& request) {
  return ModulePath(*request.job, request.torchscript);
}

StatusOr<std::string> SiloRuntime::ModulePath(const JobConfig& job,
                                              const std::string* torchscript) {
  if (job.model.kind != ModelKind::kTorchScript) return std::string();
  const std::string& name = job.model.torchscript;
  StatusOr<std::string> shipped = ShippedModuleDigest(name);
  if (!shipped.ok()) return Shareable(Annotate(shipped.status(), "model.torchscript"));
  if (!shipped->empty()) {
    // Shipped with the job by the orchestrator.
    const std::string& digest = *shipped;
    // Default deny: a module runs here only if the silo's owner listed it.
    if (guard_ == nullptr) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("silo '", silo_name_,
                       "' has no policy, so it runs no TorchScript module a job ships "
                       "(its owner lists them in the policy's allowed_models)")));
    }
    FEDSILO_RETURN_IF_ERROR(guard_->CheckModel(job.data.dataset, digest));
    if (state_dir_.empty()) {
      return Shareable(
          absl::FailedPreconditionError("this silo has no state folder to keep modules in"));
    }
    const std::string path = ShippedModulePath(state_dir_ + "/models", digest);
    std::error_code ec;
    if (torchscript != nullptr && !torchscript->empty() && !std::filesystem::exists(path, ec)) {
      if (secure::BytesDigest(*torchscript) != digest) {
        return Shareable(absl::InvalidArgumentError(
            absl::StrCat("the TorchScript module sent does not match its digest ", name)));
      }
      FEDSILO_RETURN_IF_ERROR(MakePrivateDir(state_dir_ + "/models"));
      FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(path, *torchscript));
    }
    if (!std::filesystem::exists(path, ec)) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("model ", name, " did not come with the task and is not kept here")));
    }
    // The kept copy is checked on every use: the policy allowed that digest,
    // not whatever the file holds now.
    StatusOr<std::string> kept = ReadFileOpeningSealed(path);
    if (!kept.ok() || secure::BytesDigest(*kept) != digest) {
      spdlog::error(
          "{}: the kept TorchScript module does not match its digest {}: it was "
          "changed on disk; refusing to load it",
          path, digest);
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("silo '", silo_name_, "': its copy of model ", name,
                       " does not match its digest; the silo's operator must look into it")));
    }
    return path;
  }
  // Named by path (a local federation): loading a module runs its code, so
  // only from where the silo's owner said.
  if (models_dir_.empty()) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo '", silo_name_,
                     "' loads no TorchScript models (model.torchscript); its owner "
                     "can allow those in a folder with `fedsilo silo --models-dir DIR`")));
  }
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::weakly_canonical(models_dir_, ec);
  const std::filesystem::path file = std::filesystem::weakly_canonical(job.model.torchscript, ec);
  const std::string d = dir.string() + "/", f = file.string();
  if (ec || f.compare(0, d.size(), d) != 0) {
    return DataError(absl::StatusCode::kFailedPrecondition,
                     absl::StrCat("silo '", silo_name_, "': model.torchscript ",
                                  job.model.torchscript, " is not in its models folder"),
                     absl::StrCat("--models-dir ", models_dir_));
  }
  return job.model.torchscript;
}

StatusOr<const DatasetEntry*> SiloRuntime::Entry(const std::string& dataset) const {
  auto it = catalog_.find(dataset);
  if (it == catalog_.end()) {
    return Shareable(absl::NotFoundError(
        absl::StrCat("silo '", silo_name_, "' has no dataset '", dataset,
                     "' (it offers: ", absl::StrJoin(DatasetNames(), ", "), ")")));
  }
  return &it->second;
}

StatusOr<std::unique_ptr<SiloAgent>> SiloRuntime::MakeAgent(const JobConfig& job,
                                                            const std::string& job_run_id,
                                                            const std::string& module) {
  FEDSILO_ASSIGN_OR_RETURN(const DatasetEntry* found, Entry(job.data.dataset));
  const DatasetEntry& entry = *found;
  // The silo's own files, prepared with the job's statistics.
  const std::string where =
      absl::StrCat("silo '", silo_name_, "': dataset '", job.data.dataset, "'");
  using Prepared = StatusOr<std::shared_ptr<ml::Dataset>>;
  const auto own = [&](Prepared train, Prepared test) -> StatusOr<std::unique_ptr<SiloAgent>> {
    if (!train.ok()) return train.status();
    if (!test.ok()) return test.status();
    return FinishAgent(ml::SiloData{ml::DataView::All(*train), ml::DataView::All(*test)}, job,
                       job_run_id, module);
  };
  if (!entry.csv.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(TableSplit table, ReadTable(entry, job));
    return own(ml::PrepareTabular(table.train, job.preprocess, where),
               ml::PrepareTabular(table.test, job.preprocess, where));
  }
  if (!entry.idx.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(
        ml::DatasetSplits images,
        ReadImages(entry, job, static_cast<int>(job.preprocess.statistics.class_counts.size())));
    return own(ml::PrepareImages(images.train, job.preprocess, where),
               ml::PrepareImages(images.test, job.preprocess, where));
  }
  FEDSILO_ASSIGN_OR_RETURN(
      ml::DatasetSplits data,
      ml::LoadBuiltinDataset(entry.builtin, data_dir_, job.data.test_fraction, job.seed));
  int parts = 1, index = 0;
  ml::PartitionOptions options;  // the whole set: one IID part
  options.seed = job.seed;
  if (entry.share_by_job) {
    const auto& silos = job.federation.silos;
    const auto pos = std::find(silos.begin(), silos.end(), silo_name_);
    if (pos == silos.end()) {
      return Shareable(absl::InvalidArgumentError(absl::StrCat(
          "silo '", silo_name_, "' is not in the job's federation.silos, so it has no share")));
    }
    parts = static_cast<int>(silos.size());
    index = static_cast<int>(pos - silos.begin());
    options = ml::PartitionOptions::ForJob(job);
  }
  FEDSILO_ASSIGN_OR_RETURN(
      std::vector<ml::SiloData> shares,
      ml::PartitionForSilos(data.train, parts, options, job.data.silo_test_fraction));
  return FinishAgent(std::move(shares[static_cast<size_t>(index)]), job, job_run_id, module);
}

Status SiloRuntime::TooFewToSplit(const JobConfig& job, int64_t count, const char* what,
                                  const std::string& where) const {
  return DataError(
      absl::StatusCode::kInvalidArgument,
      absl::StrCat("silo '", silo_name_, "': dataset '", job.data.dataset, "': ", count, " ", what,
                   " are too few to keep ", job.data.silo_test_fraction,
                   " of them for testing (data.silo_test_fraction)"),
      where);
}

StatusOr<SiloRuntime::TableSplit> SiloRuntime::ReadTable(const DatasetEntry& entry,
                                                         const JobConfig& job) const {
  StatusOr<ml::TabularData> read = ml::ReadTabularCsv(entry.csv, entry.schema, job.preprocess);
  if (!read.ok()) {
    return Annotate(read.status(),
                    absl::StrCat("silo '", silo_name_, "': dataset '", job.data.dataset, "'"));
  }
  ml::TabularData table = std::move(read).value();
  // Seeded by the job: every task of a run sees the same split.
  const auto [train, test] = ml::StratifiedIndices(table.labels, ml::NumClassesOf(table.labels),
                                                   job.data.silo_test_fraction, job.seed);
  if (train.empty() || test.empty()) {
    return TooFewToSplit(job, table.rows(), "rows", entry.csv);
  }
  return TableSplit{table.Subset(train), table.Subset(test)};
}

StatusOr<ml::DatasetSplits> SiloRuntime::ReadImages(const DatasetEntry& entry, const JobConfig& job,
                                                    int num_classes) const {
  std::vector<std::string> images, labels, all;
  std::error_code ec;
  for (const auto& file : std::filesystem::directory_iterator(entry.idx, ec)) {
    if (!file.is_regular_file(ec)) continue;
    const std::string name = file.path().filename().string();
    all.push_back(name);
    if (name.find("images") != std::string::npos) images.push_back(file.path().string());
    if (name.find("labels") != std::string::npos) labels.push_back(file.path().string());
  }
  if (ec) {
    return DataError(absl::StatusCode::kNotFound,
                     absl::StrCat("silo '", silo_name_, "': dataset '", job.data.dataset,
                                  "': cannot read its folder"),
                     absl::StrCat(entry.idx, ": ", ec.message()));
  }
  if (images.size() != 1 || labels.size() != 1) {
    std::sort(all.begin(), all.end());
    return DataError(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("silo '", silo_name_, "': dataset '", job.data.dataset,
                     "': expected one IDX file whose name holds 'images' and one "
                     "whose name holds 'labels' in its folder, found ",
                     all.size(), " files"),
        absl::StrCat(entry.idx, ": ",
                     all.empty() ? std::string("no files") : absl::StrJoin(all, ", ")));
  }
  FEDSILO_ASSIGN_OR_RETURN(
      ml::Dataset data,
      ml::ReadIdxDataset(images[0], labels[0], num_classes > 0 ? num_classes : 256));
  if (num_classes == 0) data.num_classes = ml::NumClassesOf(data.labels);
  data.name = job.data.dataset;
  ml::DatasetSplits splits = ml::StratifiedSplit(data, job.data.silo_test_fraction, job.seed);
  if (splits.train->size() == 0 || splits.test->size() == 0) {
    return TooFewToSplit(job, data.size(), "images", entry.idx);
  }
  return splits;
}

StatusOr<std::unique_ptr<SiloAgent>> SiloRuntime::FinishAgent(ml::SiloData data,
                                                              const JobConfig& job,
                                                              const std::string& job_run_id,
                                                              const std::string& module) {
  auto agent = std::make_unique<SiloAgent>(silo_name_, std::move(data), nullptr);
  agent->SetModulePath(module);
  agent->SetSandbox(sandbox_);
  agent->SetPrivacyGuard(guard_, job.data.dataset);
  agent->SetSecAggIdentity(secagg_identity_);
  if (!state_dir_.empty()) {
    agent->SetControlVariatePath(absl::StrCat(state_dir_, "/scaffold-", job_run_id, ".fsm"));
  }
  return agent;
}

StatusOr<transport::FitReply> SiloRuntime::RunTask(const transport::TaskRequest& request) {
  if (request.job == nullptr) return Shareable(absl::InvalidArgumentError("task carries no job"));
  FEDSILO_RETURN_IF_ERROR(Shareable(transport::CheckCarriesItsModel(request.task)));
  const transport::TaskKind kind = transport::KindOf(request.task);
  const ModelState* model = transport::ModelOf(request.task);
  const std::string round = std::to_string(request.round);
  if (audit_ != nullptr) {
    // A statistics task's model is the empty one, as on the wire.
    audit_->Record("task_received",
                   {{"job", request.run_id},
                    {"round", round},
                    {"model", secure::ModelDigest(model != nullptr ? *model : ModelState())},
                    {"job_digest", secure::BytesDigest(JobConfigToYaml(*request.job))}});
  }
  StatusOr<transport::FitReply> reply = Handle(request);
  if (!reply.ok()) reply = Outgoing(reply.status(), silo_name_);
  if (audit_ != nullptr && !reply.ok()) {
    audit_->Record("refused", {{"job", request.run_id},
                               {"round", round},
                               {"reason", std::string(reply.status().message())}});
  } else if (audit_ != nullptr && kind != transport::TaskKind::kFit) {
    audit_->Record(std::string(transport::TaskKindName(kind)),
                   {{"job", request.run_id},
                    {"round", round},
                    {"examples", std::to_string(reply->num_examples)}});
  } else if (audit_ != nullptr && request.job->privacy.secure_aggregation.enabled) {
    audit_->Record("trained",
                   {{"job", request.run_id}, {"round", round}, {"update", "kept to mask"}});
  } else if (audit_ != nullptr) {
    audit_->Record("update_sent", {{"job", request.run_id},
                                   {"round", round},
                                   {"update", secure::ModelDigest(reply->update)},
                                   {"examples", std::to_string(reply->num_examples)}});
  }
  return reply;
}

StatusOr<transport::FitReply> SiloRuntime::Handle(const transport::TaskRequest& request) {
  const JobConfig& job = *request.job;
  if (guard_ != nullptr) {
    // The policy and the run's pinned job first: before a row is read or a
    // module kept or loaded.
    FEDSILO_RETURN_IF_ERROR(guard_->CheckJob(job.data.dataset, request.run_id, job));
  }
  FEDSILO_ASSIGN_OR_RETURN(const std::string module, ModulePath(request));
  if (std::holds_alternative<transport::StatisticsTask>(request.task)) {
    return Statistics(job, request.run_id);
  }
  if (agent_ == nullptr || agent_run_id_ != request.run_id) {
    FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<SiloAgent> agent,
                             MakeAgent(job, request.run_id, module));
    agent_ = std::move(agent);
    agent_run_id_ = request.run_id;
  }
  return agent_->RunTask(request);
}

StatusOr<transport::FitReply> SiloRuntime::Statistics(const JobConfig& job,
                                                      const std::string& run_id) {
  FEDSILO_ASSIGN_OR_RETURN(const DatasetEntry* entry, Entry(job.data.dataset));
  if (!entry->builtin.empty()) {
    return Shareable(absl::InvalidArgumentError(
        absl::StrCat("silo '", silo_name_, "': dataset '", job.data.dataset, "' is the built-in '",
                     entry->builtin, "', not the silo's own files: its jobs need no statistics")));
  }
  // The statistics are data leaving the silo: the policy decides as for
  // training, and more.
  const DatasetPolicy& rules = RulesFor(guard_, job.data.dataset);
  const std::string who = absl::StrCat("silo policy for dataset '", job.data.dataset, "': ");
  if (rules.require_local_dp) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat(who,
                     "the federated statistics are exact sums, not differentially private, and the "
                     "policy allows only DP training (require_local_dp)")));
  }
  if (job.preprocess.scale == ScaleKind::kMinMax && !rules.statistics.share_min_max) {
    return Shareable(absl::FailedPreconditionError(absl::StrCat(
        who,
        "preprocess.scale minmax needs the features' minima and maxima, which are single "
        "records' values; the policy keeps them in the silo (statistics.share_min_max: "
        "false); use scale: standard")));
  }
  FeatureSums sums;
  if (!entry->csv.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(TableSplit table, ReadTable(*entry, job));
    sums = ml::SumFeatures(table.train);
  } else {
    FEDSILO_ASSIGN_OR_RETURN(ml::DatasetSplits images, ReadImages(*entry, job, 0));
    sums = ml::SumPixels(*images.train);
  }
  if (guard_ != nullptr) {
    // Admitted as the run's first task, with the plan its training will follow.
    std::optional<DpPlan> plan;
    if (job.privacy.dp.mode == DpMode::kLocal) {
      FEDSILO_ASSIGN_OR_RETURN(plan, PlanDp(job, sums.rows()));
    }
    FEDSILO_RETURN_IF_ERROR(
        guard_->Admit(job.data.dataset, run_id, job, plan ? &*plan : nullptr).status());
  }
  const int64_t k = rules.statistics.min_count;
  for (size_t c = 0; c < sums.class_counts.size(); ++c) {
    if (sums.class_counts[c] > 0 && sums.class_counts[c] < k) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat(who, "class ", c, " has fewer than ", k,
                       " training rows, too few to describe (statistics.min_count)")));
    }
  }
  for (size_t i = 0; i < sums.features.size(); ++i) {
    if (sums.count[i] > 0 && sums.count[i] < k) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat(who, "feature '", sums.features[i], "' has fewer than ", k,
                       " values, too few to describe (statistics.min_count)")));
    }
    // A category's one-hot column counts every row; its sum is how many
    // rows hold the category, and that must not be a handful either.
    if (ml::IsOneHotFeature(job.preprocess, sums.features[i]) && sums.sum[i] > 0 &&
        sums.sum[i] < k) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat(who, "category '", sums.features[i], "' has fewer than ", k,
                       " training rows, too few to describe (statistics.min_count)")));
    }
  }
  if (!rules.statistics.share_min_max) sums.WithholdMinMax();
  return transport::Encode(transport::StatisticsAnswer{std::move(sums), !rules.export_metrics});
}

StatusOr<std::string> SiloRuntime::SecureStep(const transport::SecureStepRequest& request) {
  if (agent_ == nullptr || agent_run_id_ != request.run_id) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo '", silo_name_, "' has not trained for job '", request.run_id, "'")));
  }
  StatusOr<std::string> reply = agent_->SecureStep(request);
  if (!reply.ok()) reply = Outgoing(reply.status(), silo_name_);
  if (audit_ != nullptr) {
    const std::string round = std::to_string(request.round);
    if (reply.ok()) {
      audit_->Record(
          "secure_reply",
          {{"job", request.run_id}, {"round", round}, {"reply", secure::BytesDigest(*reply)}});
    } else {
      audit_->Record("refused", {{"job", request.run_id},
                                 {"round", round},
                                 {"reason", std::string(reply.status().message())}});
    }
  }
  return reply;
}

namespace {

// Vertical runs a silo keeps open at once (the oldest is dropped).
constexpr size_t kMaxVerticalRuns = 4;
// The most a step of a run that is not open here may carry: the opening
// step is small (its job comes beside it), but for the job's TorchScript
// module when it has one (fedsilo submit sends at most 64 MiB).
constexpr size_t kMaxOpeningStepBytes = 4096;
constexpr size_t kMaxModuleBytes = size_t{64} << 20;

}  // namespace

StatusOr<std::string> SiloRuntime::VerticalStep(const transport::VerticalStepRequest& request) {
  if (!IsValidRunId(request.run_id)) {  // it names a folder here
    return Outgoing(Shareable(absl::InvalidArgumentError(
                        "a vertical step for a job id that is not one (letters, digits, '-', "
                        "'_', '.'; at most 128)")),
                    silo_name_);
  }
  std::string event;
  std::map<std::string, std::string> fields = {{"job", request.run_id}};
  StatusOr<std::string> reply = HandleVertical(request, &event, &fields);
  if (!reply.ok()) reply = Outgoing(reply.status(), silo_name_);
  if (audit_ != nullptr && !reply.ok()) {
    audit_->Record("refused", {{"job", request.run_id},
                               {"step", "vertical"},
                               {"reason", std::string(reply.status().message())}});
  } else if (audit_ != nullptr && !event.empty()) {
    fields["reply"] = secure::BytesDigest(*reply);
    audit_->Record(event, fields);
  }
  return reply;
}

StatusOr<std::string> SiloRuntime::HandleVertical(
    const transport::VerticalStepRequest& request, std::string* audit_event,
    std::map<std::string, std::string>* audit_fields) {
  namespace pb = fedsilo::v1::vertical;
  auto open = vertical_runs_.find(request.run_id);
  const size_t opening_bytes =
      kMaxOpeningStepBytes +
      (request.job != nullptr && request.job->model.kind == ModelKind::kTorchScript
           ? kMaxModuleBytes
           : 0);
  if (open == vertical_runs_.end() && request.payload.size() > opening_bytes) {
    // Not parsed: no run is open here for it to be about.
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo '", silo_name_, "' has no vertical job '", request.run_id, "' open")));
  }
  StatusOr<pb::Request> parsed = transport::ParseVerticalRequest(request.payload);
  if (!parsed.ok()) return Shareable(parsed.status());
  pb::Request& step = *parsed;
  if (step.step_case() == pb::Request::kOpen) {
    if (request.job == nullptr) {
      return Shareable(absl::InvalidArgumentError("the step that opens a vertical job has no job"));
    }
    if (audit_ != nullptr) {
      audit_->Record("vertical_job_received",
                     {{"job", request.run_id},
                      {"job_digest", secure::BytesDigest(JobConfigToYaml(*request.job))}});
    }
    const std::string& module = step.open().torchscript();
    FEDSILO_RETURN_IF_ERROR(
        OpenVertical(request.run_id, *request.job, module.empty() ? nullptr : &module));
    *audit_event = "vertical_job_opened";
    return transport::OpenedReply();
  }
  if (open == vertical_runs_.end()) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo '", silo_name_, "' has no vertical job '", request.run_id, "' open")));
  }
  VerticalRun& run = open->second;
  // The steps that say most about the silo's people are audited; the
  // batches' (hundreds a round) are not.
  switch (step.step_case()) {
    case pb::Request::kBlindOwn: {
      // Its points are bound to this run: a set it signs for one run is
      // blinded in no other.
      const std::string domain = absl::StrCat("fedsilo/vertical/", request.run_id);
      if (step.blind_own().domain() != domain) {
        return Shareable(absl::InvalidArgumentError(
            absl::StrCat("asked to blind its ids for another run than '", request.run_id, "'")));
      }
      *audit_event = "vertical_ids_blinded";
      break;
    }
    case pb::Request::kReblind:
      *audit_event = "vertical_set_blinded";
      (*audit_fields)["for"] = step.reblind().origin().substr(0, 64);
      (*audit_fields)["ids"] =
          std::to_string(step.reblind().points().size() / secure::kPsiPointBytes);
      break;
    case pb::Request::kAlign:
      *audit_event = "vertical_rows_aligned";
      (*audit_fields)["rows"] = std::to_string(step.align().rows_size());
      break;
    case pb::Request::kEndRound:
      *audit_event = "vertical_round_metrics";
      break;
    default:
      break;
  }
  const bool last_round = step.step_case() == pb::Request::kBeginRound &&
                          step.begin_round().round() == run.agent->job().training.rounds;
  StatusOr<std::string> answered = transport::AnswerVerticalRequest(*run.agent, step);
  if (!answered.ok()) {
    // A step that failed part-way may have counted rows it did not score:
    // the run ends here (and cannot be opened again).
    auto at = std::find(vertical_order_.begin(), vertical_order_.end(), request.run_id);
    if (at != vertical_order_.end()) vertical_order_.erase(at);
    vertical_runs_.erase(open);
    return answered.status();
  }
  std::string reply = *std::move(answered);
  if (last_round) run.last_round = true;
  if (run.last_round && (step.step_case() == pb::Request::kEndRound ||
                         (step.step_case() == pb::Request::kForward && step.forward().test() &&
                          !run.agent->label_owner()))) {
    // Kept as the last round's test rows are scored: at the label owner
    // once it ends the round, elsewhere with every test row's outputs sent.
    FEDSILO_RETURN_IF_ERROR(KeepVerticalModels(request.run_id, *run.agent));
  }
  return reply;
}

Status SiloRuntime::OpenVertical(const std::string& run_id, const JobConfig& job,
                                 const std::string* torchscript) {
  if (job.kind != JobKind::kVertical) {
    return Shareable(absl::InvalidArgumentError("the job is not a vertical job (kind: vertical)"));
  }
  const std::string& dataset = job.data.dataset;
  FEDSILO_ASSIGN_OR_RETURN(const DatasetEntry* found, Entry(dataset));
  const DatasetPolicy& rules = RulesFor(guard_, dataset);
  const std::string key = absl::StrCat("datasets.", dataset, ".vertical");
  if (!rules.vertical.allow || guard_ == nullptr) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo '", silo_name_, "' takes part in no vertical job on dataset '", dataset,
                     "': its policy does not allow it (", key, ".allow)")));
  }
  if (!rules.vertical.peers.empty()) {
    for (const std::string& party : job.federation.silos) {
      if (party == silo_name_) continue;
      if (std::find(rules.vertical.peers.begin(), rules.vertical.peers.end(), party) ==
          rules.vertical.peers.end()) {
        return Shareable(absl::FailedPreconditionError(absl::StrCat(
            "silo '", silo_name_, "' takes part in vertical jobs on dataset '", dataset,
            "' with its policy's peers only, and '", party, "' is not one (", key, ".peers)")));
      }
    }
  }
  // A run is opened once, for good: opening it again would start its
  // intersection afresh (new scalars, its limits reset).
  for (const LedgerEntry& e : guard_->Entries()) {
    if (e.dataset == dataset && e.run_id == run_id) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("silo '", silo_name_, "' took part in vertical job '", run_id,
                       "' before; a vertical job is opened once (submit it again)")));
    }
  }
  // Nor is a run id used twice, on any dataset: its folder holds what the
  // silo kept of it (its part, or its predictions).
  std::error_code ec;
  if (!state_dir_.empty() &&
      std::filesystem::exists(absl::StrCat(state_dir_, "/vertical/", run_id), ec)) {
    return Shareable(absl::FailedPreconditionError(
        absl::StrCat("silo '", silo_name_, "' took part in vertical job '", run_id,
                     "' before; a vertical job is opened once (submit it again)")));
  }
  if (job.vertical.predict_with == run_id) {
    return Shareable(absl::InvalidArgumentError("a vertical job cannot predict with itself"));
  }
  FEDSILO_RETURN_IF_ERROR(guard_->CheckJob(dataset, run_id, job));
  DatasetEntry entry = *found;
  if (!rules.vertical.columns.empty()) {
    // Only the columns the policy exposes, and of those only what the
    // catalog offers.
    for (const std::string& c : rules.vertical.columns) {
      const bool offered = entry.schema.features.empty() ||
                           std::find(entry.schema.features.begin(), entry.schema.features.end(),
                                     c) != entry.schema.features.end();
      if (!offered || c == entry.schema.id || c == entry.schema.label) {
        return Shareable(absl::FailedPreconditionError(
            absl::StrCat("silo '", silo_name_, "': column '", c, "' of its policy's ", key,
                         ".columns is not one of the dataset's features")));
      }
    }
    entry.schema.features = rules.vertical.columns;
    std::vector<std::string> categorical;
    for (const std::string& c : entry.schema.categorical) {
      if (std::find(rules.vertical.columns.begin(), rules.vertical.columns.end(), c) !=
          rules.vertical.columns.end()) {
        categorical.push_back(c);
      }
    }
    entry.schema.categorical = std::move(categorical);
  }
  VerticalPartyOptions options;
  options.identity = secagg_identity_;
  options.max_peer_ids = rules.vertical.max_peer_ids;
  options.min_intersection = rules.vertical.min_intersection;
  if (const std::string& with = job.vertical.predict_with; !with.empty()) {
    // The silo's own part of that run (the job's checks made `with` a run
    // id, fit to name a folder).
    if (state_dir_.empty()) {
      return Shareable(absl::FailedPreconditionError(absl::StrCat(
          "silo '", silo_name_, "' keeps no models (it has no state folder) to predict with")));
    }
    FEDSILO_ASSIGN_OR_RETURN(
        KeptPart kept,
        ReadKeptPart(absl::StrCat(state_dir_, "/vertical/", with), silo_name_, with));
    if (!kept.module.empty()) {
      // The module was allowed when the run trained: a shipped one must be
      // the digest the run's job names, and still be in the policy. (One
      // named by path came from the silo's models folder then; the part
      // binds its digest.)
      StatusOr<std::string> shipped = ShippedModuleDigest(kept.job.model.torchscript);
      if (!shipped.ok() || (!shipped->empty() && *shipped != secure::BytesDigest(kept.module))) {
        return Shareable(absl::FailedPreconditionError(
            absl::StrCat("silo '", silo_name_, "': its part of run '", with,
                         "' holds another module than the run's job names")));
      }
      if (!shipped->empty()) FEDSILO_RETURN_IF_ERROR(guard_->CheckModel(dataset, *shipped));
    }
    options.kept = std::make_shared<const KeptPart>(std::move(kept));
  } else if (job.model.kind == ModelKind::kTorchScript) {
    // Its bottom model is a submodule of the job's module: checked against
    // the policy and kept as a horizontal job's.
    FEDSILO_ASSIGN_OR_RETURN(const std::string path, ModulePath(job, torchscript));
    StatusOr<std::string> bytes = ReadFileOpeningSealed(path);
    if (!bytes.ok()) {
      return DataError(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("silo '", silo_name_, "': cannot read the job's module"),
                       bytes.status().message());
    }
    // The bytes loaded are the bytes checked: the digest again, on what was
    // read.
    StatusOr<std::string> shipped = ShippedModuleDigest(job.model.torchscript);
    if (!shipped.ok() || (!shipped->empty() && *shipped != secure::BytesDigest(*bytes))) {
      return Shareable(absl::FailedPreconditionError(
          absl::StrCat("silo '", silo_name_, "': its copy of model ", job.model.torchscript,
                       " does not match its digest; the silo's operator must look into it")));
    }
    options.module = std::make_shared<const std::string>(*std::move(bytes));
  }
  if (sandbox_ != nullptr) {
    // Each call to a module's sandbox within the job's round timeout, as a
    // horizontal task's.
    options.sandbox = *sandbox_;
    options.sandbox->timeout = ModuleCallDeadline(sandbox_->timeout, job.federation.round_timeout);
  }
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<VerticalPartyAgent> agent,
                           VerticalPartyAgent::Create(silo_name_, job, entry, options));
  // Admitted (durably, in the ledger) once everything else holds.
  FEDSILO_RETURN_IF_ERROR(guard_->Admit(dataset, run_id, job, nullptr).status());
  spdlog::info("vertical job '{}': {} rows, {} features, {}", run_id, agent->rows(),
               agent->features().size(),
               agent->label_owner() ? "the label owner" : "a passive party");
  if (vertical_runs_.size() >= kMaxVerticalRuns) {
    vertical_runs_.erase(vertical_order_.front());
    vertical_order_.erase(vertical_order_.begin());
  }
  vertical_order_.push_back(run_id);
  vertical_runs_[run_id].agent = std::move(agent);
  return absl::OkStatus();
}

Status SiloRuntime::KeepVerticalModels(const std::string& run_id,
                                       const VerticalPartyAgent& agent) const {
  if (state_dir_.empty()) return absl::OkStatus();
  if (agent.scoring() && !agent.label_owner()) return absl::OkStatus();  // nothing to keep
  const std::string dir = absl::StrCat(state_dir_, "/vertical/", run_id);
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(state_dir_ + "/vertical"));
  FEDSILO_RETURN_IF_ERROR(MakePrivateDir(dir));
  if (!agent.scoring()) return KeepPart(dir, run_id, agent);
  // The predictions are about the silo's people: they stay here.
  const std::string csv = agent.PredictionsCsv();
  if (csv.empty()) {
    return Shareable(absl::InternalError("the run's predictions are not every aligned row's"));
  }
  FEDSILO_RETURN_IF_ERROR(WriteProtectedFile(dir + "/predictions.csv", csv));
  if (audit_ != nullptr) {
    audit_->Record("vertical_predictions_kept",
                   {{"job", run_id},
                    {"predict_with", agent.job().vertical.predict_with},
                    {"rows", std::to_string(agent.predicted_rows())}});
  }
  spdlog::info("vertical job '{}': {} predictions kept in {}/predictions.csv", run_id,
               agent.predicted_rows(), dir);
  return absl::OkStatus();
}

}  // namespace fedsilo::silo
