#include "cli/audit_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/command.h"
#include "core/file_util.h"
#include "secure/audit_log.h"
#include "secure/certificate_authority.h"

namespace fedsilo::cli {
namespace {

// The signed heads of one participant in `file`, each checked against the
// CA in `ca_file`.
StatusOr<std::vector<secure::SignedAuditHead>> ReadSignedHeads(const std::string& file,
                                                               const std::string& ca_file) {
  if (ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--anchors needs --ca: the federation's CA certificate (ca.pem in every kit), to check "
        "that each anchor was signed by the silo itself");
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(ca_file));
  FEDSILO_ASSIGN_OR_RETURN(std::unique_ptr<secure::SignatureChecker> checker,
                           secure::SignatureChecker::Create(ca_pem));
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  std::vector<secure::SignedAuditHead> heads;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (line.empty()) continue;
    const std::string source = absl::StrCat(file, ":", line_number);
    FEDSILO_ASSIGN_OR_RETURN(secure::SignedAuditHead head,
                             secure::ParseAuditHeadLine(line, source));
    if (!heads.empty() && (head.participant != heads.front().participant ||
                           head.federation != heads.front().federation)) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": an anchor of '", secure::ShownName(head.participant), "' among '",
          secure::ShownName(heads.front().participant), "''s: one file holds one silo's"));
    }
    if (Status checked = secure::CheckAuditHead(head, *checker, secure::ParticipantKind::kSilo);
        !checked.ok()) {
      return absl::PermissionDeniedError(absl::StrCat(
          source,
          ": this anchor's signature does not verify, so it proves nothing: ", checked.message()));
    }
    heads.push_back(std::move(head));
  }
  if (heads.empty()) return absl::InvalidArgumentError(absl::StrCat(file, ": holds no anchor"));
  return heads;
}

std::string When(int64_t unix_millis) {
  const std::time_t t = static_cast<std::time_t>(unix_millis / 1000);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return when;
}

}  // namespace

Status AuditVerifyCommand(const AuditVerifyOptions& options) {
  std::vector<secure::AuditAnchor> anchors;
  if (!options.anchor.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(secure::AuditAnchor anchor, secure::ParseAuditAnchor(options.anchor));
    anchors.push_back(anchor);
  }
  std::vector<secure::SignedAuditHead> signed_heads;
  if (!options.anchors_file.empty()) {
    FEDSILO_ASSIGN_OR_RETURN(signed_heads, ReadSignedHeads(options.anchors_file, options.ca_file));
    for (const secure::SignedAuditHead& h : signed_heads) anchors.push_back(h.head);
  }
  const secure::SignedAuditHead* latest = nullptr;
  for (const secure::SignedAuditHead& h : signed_heads) {
    if (latest == nullptr || h.head.seq > latest->head.seq) latest = &h;
  }
  // Another silo's anchors prove nothing about this log (and would frame it).
  if (latest != nullptr) {
    StatusOr<secure::AuditVerification> chain = secure::VerifyAuditLog(options.path);
    if (chain.ok() && chain->entries > 0 &&
        chain->actor != absl::StrCat("silo '", latest->participant, "'")) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.anchors_file, ": these anchors are silo '",
                       secure::ShownName(latest->participant), "''s, but ", options.path,
                       " was written by ", secure::ShownName(chain->actor)));
    }
  }
  StatusOr<secure::AuditVerification> v = secure::VerifyAuditLog(options.path, anchors);
  if (options.json) {
    nlohmann::json j = {{"path", options.path}, {"intact", v.ok()}, {"anchors", anchors.size()}};
    if (latest != nullptr) {
      j["signed_by"] = latest->participant;
      j["latest_anchor"] = {{"entries", latest->head.seq},
                            {"hash", latest->head.hash},
                            {"unix_millis", latest->unix_millis}};
    }
    if (v.ok()) {
      j["entries"] = v->entries;
      j["head"] = v->head;
      j["anchor"] = absl::StrCat(v->entries, ":", v->head);
      j["keyed"] = v->keyed;
      j["anchored"] = v->anchored;
    } else {
      j["error"] = std::string(v.status().message());
    }
    std::printf("%s\n", j.dump().c_str());
  }
  if (!v.ok()) return v.status();
  if (!options.json) {
    std::printf("%s: %lld entries, chain intact%s\n", options.path.c_str(),
                static_cast<long long>(v->entries),
                v->keyed ? ", every entry authenticated under the storage key" : "");
    if (latest != nullptr) {
      std::printf(
          "matches all %zu anchor(s) signed by silo '%s'; the latest: entry %lld, signed %s\n",
          anchors.size(), latest->participant.c_str(), static_cast<long long>(latest->head.seq),
          When(latest->unix_millis).c_str());
    } else if (v->anchored) {
      std::printf("reaches the anchor at entry %lld unchanged\n",
                  static_cast<long long>(anchors.front().seq));
    }
    std::printf("anchor: %lld:%s (keep it elsewhere; --anchor checks that nothing was cut off)\n",
                static_cast<long long>(v->entries), v->head.c_str());
    if (!v->keyed && v->entries > 0) {
      std::printf(
          "note: the entries are not keyed (no storage key ring when they were written): "
          "whoever can write the file could rewrite the whole chain consistently\n");
    }
  }
  return absl::OkStatus();
}

void RegisterAuditCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<AuditVerifyOptions>();
  CLI::App* audit = app.add_subcommand("audit", "Audit trails");
  audit->require_subcommand(1);
  CLI::App* verify = audit->add_subcommand(
      "verify", "Check an audit log's hash chain and report the first broken entry");
  verify->add_option("log", options->path, "The audit log (<state>/audit.log)")->required();
  verify->add_flag("--json", options->json, "Print JSON");
  commands.AddStorageKeysOption(verify);
  verify->add_option("--anchor", options->anchor,
                     "ENTRY:HASH printed by an earlier verify and kept elsewhere: also check "
                     "that the log still reaches it unchanged");
  verify->add_option("--anchors", options->anchors_file,
                     "A silo's signed audit heads as the orchestrator keeps them "
                     "(<state>/audit-anchors/SILO.jsonl): check the log against every one");
  verify->add_option("--ca", options->ca_file,
                     "The federation's CA certificate (ca.pem in any kit), to check the "
                     "anchors' signatures");
  commands.Add(verify, kStateFiles, [options] { return AuditVerifyCommand(*options); });
}

}  // namespace fedsilo::cli
