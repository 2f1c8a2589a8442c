// `fedsilo provision`: the federation's certificate authority and startup
// kits; add-silo, add-user, revoke, list.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "core/unix_time.h"
#include "secure/provisioner.h"

namespace fedsilo::cli {
namespace {

struct ProvisionOptions {
  std::string federation_path;
  std::string kits_dir = "kits";
  std::string participant;
  int days = 365;
};

// `fedsilo provision FEDERATION`.
Status Provision(const ProvisionOptions& options) {
  if (options.federation_path.empty()) {
    return absl::InvalidArgumentError(
        "provision needs a federation file (or add-silo / add-user NAME); see --help");
  }
  FEDSILO_ASSIGN_OR_RETURN(secure::FederationSpec spec,
                           secure::LoadFederationSpec(options.federation_path));
  const std::string& kits = options.kits_dir;
  FEDSILO_RETURN_IF_ERROR(
      secure::ProvisionFederation(spec, kits, std::chrono::system_clock::now()));
  std::printf("federation '%s': CA in %s/ca (keep ca.key private), kits:\n", spec.name.c_str(),
              kits.c_str());
  std::printf("  %s/%s  (orchestrator; serves %s:%d)\n", kits.c_str(),
              spec.orchestrator_name.c_str(), spec.orchestrator_hosts.front().c_str(),
              spec.orchestrator_port);
  for (const secure::ParticipantSpec& p : spec.participants) {
    std::printf("  %s/%s  (%s)\n", kits.c_str(), p.name.c_str(),
                std::string(secure::ParticipantKindName(p.kind)).c_str());
  }
  std::printf("certificates valid %d days\n", spec.certificate_days);
  return absl::OkStatus();
}

// `fedsilo provision add-silo|add-user NAME`.
Status AddKit(const ProvisionOptions& options, secure::ParticipantKind kind) {
  FEDSILO_RETURN_IF_ERROR(secure::AddParticipant(options.kits_dir, {options.participant, kind},
                                                 options.days, std::chrono::system_clock::now()));
  std::printf("issued %s kit %s/%s (valid %d days); hand the folder to its owner\n",
              std::string(secure::ParticipantKindName(kind)).c_str(), options.kits_dir.c_str(),
              options.participant.c_str(), options.days);
  return absl::OkStatus();
}

// `fedsilo provision revoke NAME`.
Status Revoke(const ProvisionOptions& options) {
  const std::string& kits_dir = options.kits_dir;
  const std::string& name = options.participant;
  FEDSILO_RETURN_IF_ERROR(
      secure::RevokeParticipant(kits_dir, name, std::chrono::system_clock::now()));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<secure::ParticipantRecord> kits,
                           secure::ListParticipants(kits_dir));
  std::string serial;
  for (const secure::ParticipantRecord& r : kits) {
    if (r.name == name) serial = r.serial;
  }
  std::printf(
      "revoked '%s' (serial %s): %s/ca/crl.pem now lists it, and each of the %zu kits here has "
      "a copy (crl.pem).\nCopy %s/ca/crl.pem into the kit folders of the orchestrator and the "
      "silos on other machines: they re-read it within seconds, refuse the certificate at the "
      "handshake and close its open stream.\n",
      name.c_str(), serial.c_str(), kits_dir.c_str(), kits.size(), kits_dir.c_str());
  return absl::OkStatus();
}

// `fedsilo provision list`.
Status List(const ProvisionOptions& options) {
  FEDSILO_ASSIGN_OR_RETURN(std::vector<secure::ParticipantRecord> kits,
                           secure::ListParticipants(options.kits_dir));
  const auto now = std::chrono::system_clock::now();
  std::printf("%-20s %-13s %-34s %-11s %s\n", "NAME", "KIND", "SERIAL", "EXPIRES", "STATUS");
  for (const secure::ParticipantRecord& r : kits) {
    const char* status = r.revoked ? "revoked" : now > r.not_after ? "expired" : "valid";
    std::printf("%-20s %-13s %-34s %-11s %s\n", r.name.c_str(),
                std::string(secure::ParticipantKindName(r.kind)).c_str(), r.serial.c_str(),
                UtcTime(r.not_after, true).c_str(), status);
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterProvisionCommand(CLI::App& app, Commands& commands) {
  auto options = std::make_shared<ProvisionOptions>();
  CLI::App* provision = app.add_subcommand(
      "provision",
      "Create the federation's certificate authority and a startup kit per participant");
  provision->add_option("federation", options->federation_path,
                        "Federation file (YAML): name, orchestrator hosts/port, participants");
  provision
      ->add_option("--out", options->kits_dir,
                   "Folder that receives ca/ and one kit per participant")
      ->capture_default_str();
  provision->require_subcommand(0, 1);
  commands.Add(provision, kNoSetUp, [options] { return Provision(*options); });
  CLI::App* add_silo = provision->add_subcommand(
      "add-silo", "Issue a kit for one more silo with the existing CA (nothing else changes)");
  CLI::App* add_user = provision->add_subcommand(
      "add-user", "Issue a kit for one more user (data scientist) with the existing CA");
  for (CLI::App* add : {add_silo, add_user}) {
    add->add_option("name", options->participant, "Participant name (letters, digits, -_.)")
        ->required();
    add->add_option("--out", options->kits_dir, "Folder that holds ca/ and the kits")
        ->capture_default_str();
    add->add_option("--days", options->days, "Certificate validity in days")
        ->check(CLI::Range(1, 36500))
        ->capture_default_str();
  }
  commands.Add(add_silo, kNoSetUp,
               [options] { return AddKit(*options, secure::ParticipantKind::kSilo); });
  commands.Add(add_user, kNoSetUp,
               [options] { return AddKit(*options, secure::ParticipantKind::kUser); });
  CLI::App* revoke = provision->add_subcommand(
      "revoke",
      "Revoke a participant's certificate: writes the CA's revocation list (ca/crl.pem) and a "
      "copy into every kit here; copy it to the kits on other machines");
  revoke->add_option("name", options->participant, "Participant whose certificate is revoked")
      ->required();
  revoke->add_option("--out", options->kits_dir, "Folder that holds ca/ and the kits")
      ->capture_default_str();
  commands.Add(revoke, kNoSetUp, [options] { return Revoke(*options); });
  CLI::App* list = provision->add_subcommand(
      "list", "Every participant with a kit here: kind, certificate serial, expiry, revoked");
  list->add_option("--out", options->kits_dir, "Folder that holds ca/ and the kits")
      ->capture_default_str();
  commands.Add(list, kNoSetUp, [options] { return List(*options); });
}

}  // namespace fedsilo::cli
