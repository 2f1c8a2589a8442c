#include "orchestrator/run_proto.h"

#include <string>

namespace fedsilo::orchestrator {
namespace {

void ToProto(const MetricRow& m, fedsilo::v1::MetricValue* out) {
  out->set_name(m.name);
  out->set_round(m.round);
  out->set_value(m.value);
  out->set_source(m.source);
  out->set_time_unix(m.time);
}

MetricRow FromProto(const fedsilo::v1::MetricValue& m) {
  MetricRow row;
  row.name = m.name();
  row.round = m.round();
  row.value = m.value();
  row.source = m.source();
  row.time = m.time_unix();
  return row;
}

}  // namespace

void ToProto(const JobRecord& j, fedsilo::v1::JobInfo* info) {
  info->set_id(j.id);
  info->set_name(j.name);
  info->set_owner(j.owner);
  info->set_state(std::string(JobStateName(j.state)));
  info->set_rounds_total(j.rounds_total);
  info->set_rounds_completed(j.rounds_completed);
  info->set_created_unix(j.created);
  info->set_started_unix(j.started);
  info->set_finished_unix(j.finished);
  info->set_error(j.error);
  info->set_run_id(j.run_id);
  info->set_experiment(j.experiment);
}

void ToProto(const RoundRecord& r, fedsilo::v1::RoundInfo* info) {
  info->set_round(r.round);
  info->set_seconds(r.seconds);
  info->set_finished_unix(r.finished);
  info->set_silos_sampled(r.silos_sampled);
  info->set_silos_succeeded(r.silos_succeeded);
  for (const std::string& f : r.failures) info->add_failures(f);
}

void ToProto(const RunSummary& run, fedsilo::v1::RunSummary* out) {
  ToProto(run.job, out->mutable_job());
  for (const auto& [name, m] : run.latest) ToProto(m, out->add_latest_metrics());
}

void ToProto(const RunData& run, fedsilo::v1::Run* out) {
  ToProto(run.job, out->mutable_job());
  out->set_job_yaml(run.job.job_yaml);
  for (const RoundRecord& r : run.rounds) ToProto(r, out->add_rounds());
  for (const MetricRow& m : run.metrics) ToProto(m, out->add_metrics());
  for (const SiloRow& s : run.silos) {
    fedsilo::v1::RunSilo* silo = out->add_silos();
    silo->set_silo(s.silo);
    silo->set_state(s.state);
    silo->set_last_seen_unix(s.last_seen);
    silo->set_rounds(s.rounds);
    silo->set_examples(s.examples);
    silo->set_epsilon(s.epsilon);
  }
  for (const EventRow& e : run.events) {
    fedsilo::v1::LogEntry* entry = out->add_events();
    entry->set_seq(e.seq);
    entry->set_time_unix(e.time);
    entry->set_level(e.level);
    entry->set_message(e.message);
  }
}

JobRecord FromProto(const fedsilo::v1::JobInfo& info) {
  JobRecord j;
  j.id = info.id();
  j.name = info.name();
  j.owner = info.owner();
  j.state = ParseJobState(info.state());
  j.rounds_total = info.rounds_total();
  j.rounds_completed = info.rounds_completed();
  j.created = info.created_unix();
  j.started = info.started_unix();
  j.finished = info.finished_unix();
  j.error = info.error();
  j.run_id = info.run_id();
  j.experiment = info.experiment();
  return j;
}

RunSummary FromProto(const fedsilo::v1::RunSummary& run) {
  RunSummary out;
  out.job = FromProto(run.job());
  for (const auto& m : run.latest_metrics()) out.latest[m.name()] = FromProto(m);
  return out;
}

RunData FromProto(const fedsilo::v1::Run& run) {
  RunData out;
  out.job = FromProto(run.job());
  out.job.job_yaml = run.job_yaml();
  for (const auto& r : run.rounds()) {
    RoundRecord round;
    round.round = r.round();
    round.seconds = r.seconds();
    round.finished = r.finished_unix();
    round.silos_sampled = r.silos_sampled();
    round.silos_succeeded = r.silos_succeeded();
    round.failures.assign(r.failures().begin(), r.failures().end());
    out.rounds.push_back(std::move(round));
  }
  for (const auto& m : run.metrics()) out.metrics.push_back(FromProto(m));
  for (const auto& s : run.silos()) {
    SiloRow silo;
    silo.silo = s.silo();
    silo.state = s.state();
    silo.last_seen = s.last_seen_unix();
    silo.rounds = s.rounds();
    silo.examples = s.examples();
    silo.epsilon = s.epsilon();
    out.silos.push_back(std::move(silo));
  }
  for (const auto& e : run.events()) {
    EventRow event;
    event.seq = e.seq();
    event.job_id = out.job.id;
    event.time = e.time_unix();
    event.level = e.level();
    event.message = e.message();
    out.events.push_back(std::move(event));
  }
  return out;
}

}  // namespace fedsilo::orchestrator
