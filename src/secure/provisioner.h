// Provisioning: turns a federation description into a certificate authority
// and one startup kit per participant.
//
//   <out>/ca/                 ca.crt, ca.key (0600), federation.yaml — stays
//                             with the federation operator
//   <out>/<participant>/      <name>.crt, <name>.key (0600), ca.crt, kit.yaml
//                             and, once anything is revoked, crl.pem
//
// federation.yaml:
//   name: hospital-network          # required
//   certificate_days: 365           # optional; CA and participant validity
//   orchestrator:
//     name: orchestrator            # optional
//     hosts: [orch.example.org, 10.0.0.5]   # names/addresses it serves on
//     port: 8443                    # optional
//   participants:
//     - {name: hospital-a, kind: silo}
//     - {name: alice, kind: user}
#ifndef FEDSILO_SECURE_PROVISIONER_H_
#define FEDSILO_SECURE_PROVISIONER_H_

#include <chrono>
#include <string>
#include <vector>

#include "core/status.h"
#include "secure/certificate_authority.h"

namespace fedsilo::secure {

struct ParticipantSpec {
  std::string name;
  ParticipantKind kind = ParticipantKind::kSilo;
};

struct FederationSpec {
  std::string name;
  int certificate_days = 365;
  std::string orchestrator_name = "orchestrator";
  std::vector<std::string> orchestrator_hosts = {"localhost", "127.0.0.1"};
  int orchestrator_port = 8443;
  std::vector<ParticipantSpec> participants;
};

// Parses and checks a federation file. InvalidArgument naming the file, line
// and key for unknown keys, bad names, duplicates or bad values.
StatusOr<FederationSpec> ParseFederationSpec(absl::string_view yaml_text, absl::string_view source);
StatusOr<FederationSpec> LoadFederationSpec(const std::string& path);

// What a kit's kit.yaml says.
struct Kit {
  std::string federation;
  std::string name;
  ParticipantKind kind = ParticipantKind::kSilo;
  std::string orchestrator_host;  // the address to dial (the first host)
  int orchestrator_port = 0;
  std::string certificate_path;  // absolute
  std::string private_key_path;
  std::string ca_certificate_path;
  std::string crl_path;  // <dir>/crl.pem: may not exist (nothing revoked)
};

// Reads <dir>/kit.yaml. NotFound / InvalidArgument naming the file.
StatusOr<Kit> LoadKit(const std::string& dir);

// LoadKit, then checks that it is a `kind` kit; InvalidArgument naming the
// folder otherwise, e.g. "kits/a: this is a silo kit; you need a user kit for
// job commands (`fedsilo provision add-user NAME` issues one)".
StatusOr<Kit> LoadKitOfKind(const std::string& dir, ParticipantKind kind, absl::string_view use);

// Creates the CA and every kit under `out_dir`. AlreadyExists (nothing
// written) if <out>/ca or any participant's folder already exists.
Status ProvisionFederation(const FederationSpec& spec, const std::string& out_dir,
                           std::chrono::system_clock::time_point now);

// Issues one more participant with the existing CA in <out>/ca; the CA and
// every existing kit are left untouched. AlreadyExists if the folder exists,
// NotFound if <out>/ca is missing.
Status AddParticipant(const std::string& out_dir, const ParticipantSpec& participant,
                      int valid_days, std::chrono::system_clock::time_point now);

// One kit of a kits folder, as `fedsilo provision list` shows it.
struct ParticipantRecord {
  std::string name;
  ParticipantKind kind = ParticipantKind::kSilo;
  std::string serial;  // hex
  std::chrono::system_clock::time_point not_after;
  bool revoked = false;  // by <out>/ca/crl.pem
};

// Every kit under `out_dir` (a folder with a kit.yaml), by name. NotFound
// when <out>/ca is missing; errors name the file that does not read.
StatusOr<std::vector<ParticipantRecord>> ListParticipants(const std::string& out_dir);

// Revokes the certificate of <out>/<name>: writes <out>/ca/crl.pem, signed by
// the CA and listing every certificate revoked so far, and copies it into
// every kit under <out> as crl.pem, where the orchestrator and the silos read
// it (copy it to the kits on other machines too). NotFound naming the kit;
// AlreadyExists when it is revoked already.
Status RevokeParticipant(const std::string& out_dir, const std::string& name,
                         std::chrono::system_clock::time_point now);

}  // namespace fedsilo::secure

#endif  // FEDSILO_SECURE_PROVISIONER_H_
