#include "secure/provisioner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"
#include "core/job_config.h"
#include "core/yaml_util.h"

namespace fedsilo::secure {
namespace {

namespace fs = std::filesystem;

StatusOr<std::string> ReadName(absl::string_view source, const YAML::Node& node,
                               absl::string_view key) {
  if (!node || !node.IsScalar() || !IsValidSiloName(node.Scalar())) {
    return YamlError(source, node,
                     absl::StrCat(key, ": must be a name of 1-64 letters, digits, '-', '_', '.'"));
  }
  return node.Scalar();
}

StatusOr<int> ReadInt(absl::string_view source, const YAML::Node& node, absl::string_view key,
                      int min, int max) {
  int value = 0;
  if (!node.IsScalar() || !YAML::convert<int>::decode(node, value) || value < min || value > max) {
    return YamlError(source, node,
                     absl::StrCat(key, ": must be an integer in [", min, ", ", max, "]"));
  }
  return value;
}

// Writes a new file with the given mode; fails if it exists.
Status WriteNewFile(const std::string& path, const std::string& contents, mode_t mode) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return absl::InternalError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  fchmod(fd, mode);  // umask must not widen or narrow it
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n <= 0) {
      close(fd);
      return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) return absl::InternalError(absl::StrCat(path, ": close failed"));
  return absl::OkStatus();
}

std::string KitYaml(const FederationSpec& spec, const std::string& name, ParticipantKind kind) {
  YAML::Emitter out;
  out << YAML::Comment("fedsilo startup kit: keep this folder private to its participant");
  out << YAML::BeginMap;
  out << YAML::Key << "federation" << YAML::Value << spec.name;
  out << YAML::Key << "name" << YAML::Value << name;
  out << YAML::Key << "kind" << YAML::Value << std::string(ParticipantKindName(kind));
  out << YAML::Key << "orchestrator" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "host" << YAML::Value << spec.orchestrator_hosts.front();
  out << YAML::Key << "port" << YAML::Value << spec.orchestrator_port;
  out << YAML::EndMap;
  out << YAML::Key << "certificate" << YAML::Value << name + ".crt";
  out << YAML::Key << "private_key" << YAML::Value << name + ".key";
  out << YAML::Key << "ca_certificate" << YAML::Value << "ca.crt";
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string FederationYaml(const FederationSpec& spec) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << spec.name;
  out << YAML::Key << "certificate_days" << YAML::Value << spec.certificate_days;
  out << YAML::Key << "orchestrator" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << spec.orchestrator_name;
  out << YAML::Key << "hosts" << YAML::Value << YAML::Flow << spec.orchestrator_hosts;
  out << YAML::Key << "port" << YAML::Value << spec.orchestrator_port;
  out << YAML::EndMap;
  out << YAML::Key << "participants" << YAML::Value << YAML::BeginSeq;
  for (const ParticipantSpec& p : spec.participants) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << p.name << YAML::Key
        << "kind" << YAML::Value << std::string(ParticipantKindName(p.kind)) << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

// Writes one participant's kit folder (which must not exist yet).
Status WriteKit(const CertificateAuthority& ca, const FederationSpec& spec,
                const std::string& out_dir, const std::string& name, ParticipantKind kind,
                int valid_days, std::chrono::system_clock::time_point now) {
  const std::string dir = (fs::path(out_dir) / name).string();
  CertificateRequest request{name, kind, {}, valid_days};
  if (kind == ParticipantKind::kOrchestrator) request.hosts = spec.orchestrator_hosts;
  FEDSILO_ASSIGN_OR_RETURN(IssuedCertificate issued, ca.Issue(request, now));
  std::error_code ec;
  if (!fs::create_directory(dir, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat(dir, ": already exists; kits are never overwritten"));
  }
  fs::permissions(dir, fs::perms::owner_all, ec);
  FEDSILO_RETURN_IF_ERROR(WriteNewFile(dir + "/" + name + ".crt", issued.certificate_pem, 0644));
  FEDSILO_RETURN_IF_ERROR(WriteNewFile(dir + "/" + name + ".key", issued.private_key_pem, 0600));
  FEDSILO_RETURN_IF_ERROR(WriteNewFile(dir + "/ca.crt", ca.certificate_pem(), 0644));
  return WriteNewFile(dir + "/kit.yaml", KitYaml(spec, name, kind), 0644);
}

}  // namespace

namespace {
StatusOr<FederationSpec> ParseFederationSpecUnguarded(absl::string_view yaml_text,
                                                      absl::string_view source);
}  // namespace

StatusOr<FederationSpec> ParseFederationSpec(absl::string_view yaml_text,
                                             absl::string_view source) {
  return GuardYaml<FederationSpec>(source,
                                   [&] { return ParseFederationSpecUnguarded(yaml_text, source); });
}

namespace {
StatusOr<FederationSpec> ParseFederationSpecUnguarded(absl::string_view yaml_text,
                                                      absl::string_view source) {
  FEDSILO_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source));
  FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(
      source, root, "", {"name", "certificate_days", "orchestrator", "participants"}));
  FederationSpec spec;
  FEDSILO_ASSIGN_OR_RETURN(spec.name, ReadName(source, root["name"], "name"));
  if (root["certificate_days"]) {
    FEDSILO_ASSIGN_OR_RETURN(spec.certificate_days, ReadInt(source, root["certificate_days"],
                                                            "certificate_days", 1, 36500));
  }
  std::set<std::string> names;
  if (const YAML::Node orch = root["orchestrator"]) {
    FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(source, orch, "orchestrator", {"name", "hosts", "port"}));
    if (orch["name"]) {
      FEDSILO_ASSIGN_OR_RETURN(spec.orchestrator_name,
                               ReadName(source, orch["name"], "orchestrator.name"));
    }
    if (const YAML::Node hosts = orch["hosts"]) {
      if (!hosts.IsSequence() || hosts.size() == 0) {
        return YamlError(source, hosts,
                         "orchestrator.hosts: must be a non-empty list of host names "
                         "or IP addresses");
      }
      spec.orchestrator_hosts.clear();
      for (const auto& h : hosts) {
        if (!h.IsScalar() || h.Scalar().empty()) {
          return YamlError(source, h,
                           "orchestrator.hosts: each entry must be a host name or IP address");
        }
        spec.orchestrator_hosts.push_back(h.Scalar());
      }
    }
    if (orch["port"]) {
      FEDSILO_ASSIGN_OR_RETURN(spec.orchestrator_port,
                               ReadInt(source, orch["port"], "orchestrator.port", 1, 65535));
    }
  }
  names.insert(spec.orchestrator_name);
  names.insert("ca");
  const YAML::Node participants = root["participants"];
  if (!participants || !participants.IsSequence() || participants.size() == 0) {
    return YamlError(source, participants ? participants : root,
                     "participants: must be a non-empty list of {name, kind}");
  }
  for (const auto& p : participants) {
    FEDSILO_RETURN_IF_ERROR(CheckYamlKeys(source, p, "participants[]", {"name", "kind"}));
    ParticipantSpec ps;
    FEDSILO_ASSIGN_OR_RETURN(ps.name, ReadName(source, p["name"], "participants[].name"));
    const YAML::Node kind = p["kind"];
    StatusOr<ParticipantKind> k =
        ParseParticipantKind(kind && kind.IsScalar() ? kind.Scalar() : "");
    if (!k.ok() || *k == ParticipantKind::kOrchestrator) {
      return YamlError(
          source, kind ? kind : p,
          absl::StrCat("participants[].kind of '", ps.name, "': must be silo or user"));
    }
    ps.kind = *k;
    if (!names.insert(ps.name).second) {
      return YamlError(
          source, p["name"],
          absl::StrCat("participant name '", ps.name, "' is used twice (or is reserved)"));
    }
    spec.participants.push_back(ps);
  }
  return spec;
}
}  // namespace

StatusOr<FederationSpec> LoadFederationSpec(const std::string& path) {
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseFederationSpec(text, path);
}

StatusOr<Kit> LoadKitOfKind(const std::string& dir, ParticipantKind kind, absl::string_view use) {
  FEDSILO_ASSIGN_OR_RETURN(Kit kit, LoadKit(dir));
  if (kit.kind == kind) return kit;
  const absl::string_view name = ParticipantKindName(kind);
  const char* article = name.front() == 'o' ? "an" : "a";
  std::string hint;
  if (kind != ParticipantKind::kOrchestrator) {
    hint = absl::StrCat(" (`fedsilo provision add-", name, " NAME` issues one)");
  }
  return absl::InvalidArgumentError(absl::StrCat(dir, ": this is a ", ParticipantKindName(kit.kind),
                                                 " kit; you need ", article, " ", name, " kit for ",
                                                 use, hint));
}

StatusOr<Kit> LoadKit(const std::string& dir) {
  const std::string path = (fs::path(dir) / "kit.yaml").string();
  FEDSILO_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Kit kit;
  try {
    YAML::Node root = YAML::Load(text);
    kit.federation = root["federation"].as<std::string>();
    kit.name = root["name"].as<std::string>();
    FEDSILO_ASSIGN_OR_RETURN(kit.kind, ParseParticipantKind(root["kind"].as<std::string>()));
    kit.orchestrator_host = root["orchestrator"]["host"].as<std::string>();
    kit.orchestrator_port = root["orchestrator"]["port"].as<int>();
    const fs::path base = fs::absolute(dir);
    kit.certificate_path = (base / root["certificate"].as<std::string>()).string();
    kit.private_key_path = (base / root["private_key"].as<std::string>()).string();
    kit.ca_certificate_path = (base / root["ca_certificate"].as<std::string>()).string();
    kit.crl_path = (base / "crl.pem").string();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a fedsilo kit: ", e.msg));
  }
  return kit;
}

Status ProvisionFederation(const FederationSpec& spec, const std::string& out_dir,
                           std::chrono::system_clock::time_point now) {
  std::error_code ec;
  const fs::path out(out_dir);
  std::vector<std::string> folders = {"ca", spec.orchestrator_name};
  for (const ParticipantSpec& p : spec.participants) folders.push_back(p.name);
  for (const std::string& f : folders) {
    if (fs::exists(out / f, ec)) {
      return absl::AlreadyExistsError(
          absl::StrCat((out / f).string(),
                       ": already exists; kits are never overwritten (use "
                       "`fedsilo provision add-silo` to add a participant)"));
    }
  }
  FEDSILO_ASSIGN_OR_RETURN(auto ca,
                           CertificateAuthority::Create(spec.name, spec.certificate_days, now));
  fs::create_directories(out / "ca", ec);
  if (ec) return absl::InternalError(absl::StrCat((out / "ca").string(), ": ", ec.message()));
  fs::permissions(out / "ca", fs::perms::owner_all, ec);
  std::string ca_key = ca->PrivateKeyPem();
  Status written = WriteNewFile((out / "ca" / "ca.key").string(), ca_key, 0600);
  WipeString(ca_key);
  FEDSILO_RETURN_IF_ERROR(written);
  FEDSILO_RETURN_IF_ERROR(
      WriteNewFile((out / "ca" / "ca.crt").string(), ca->certificate_pem(), 0644));
  FEDSILO_RETURN_IF_ERROR(
      WriteNewFile((out / "ca" / "federation.yaml").string(), FederationYaml(spec), 0644));
  FEDSILO_RETURN_IF_ERROR(WriteKit(*ca, spec, out_dir, spec.orchestrator_name,
                                   ParticipantKind::kOrchestrator, spec.certificate_days, now));
  for (const ParticipantSpec& p : spec.participants) {
    FEDSILO_RETURN_IF_ERROR(
        WriteKit(*ca, spec, out_dir, p.name, p.kind, spec.certificate_days, now));
  }
  return absl::OkStatus();
}

Status AddParticipant(const std::string& out_dir, const ParticipantSpec& participant,
                      int valid_days, std::chrono::system_clock::time_point now) {
  const fs::path ca_dir = fs::path(out_dir) / "ca";
  if (!IsValidSiloName(participant.name) || participant.name == "ca") {
    return absl::InvalidArgumentError(absl::StrCat(
        "participant name '", participant.name, "' must be 1-64 letters, digits, '-', '_', '.'"));
  }
  FEDSILO_ASSIGN_OR_RETURN(FederationSpec spec,
                           LoadFederationSpec((ca_dir / "federation.yaml").string()));
  FEDSILO_ASSIGN_OR_RETURN(std::string cert, ReadFile((ca_dir / "ca.crt").string()));
  FEDSILO_ASSIGN_OR_RETURN(std::string key, ReadFile((ca_dir / "ca.key").string()));
  StatusOr<std::unique_ptr<CertificateAuthority>> ca = CertificateAuthority::Load(cert, key);
  WipeString(key);
  if (!ca.ok()) return Annotate(ca.status(), ca_dir.string());
  return WriteKit(**ca, spec, out_dir, participant.name, participant.kind, valid_days, now);
}

namespace {

// The kits under `out_dir` (folders holding a kit.yaml), by name.
StatusOr<std::vector<Kit>> KitsUnder(const fs::path& out) {
  std::vector<Kit> kits;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(out, ec)) {
    if (!e.is_directory() || e.path().filename() == "ca") continue;
    if (!fs::exists(e.path() / "kit.yaml", ec)) continue;
    FEDSILO_ASSIGN_OR_RETURN(Kit kit, LoadKit(e.path().string()));
    kits.push_back(std::move(kit));
  }
  if (ec) return absl::InternalError(absl::StrCat(out.string(), ": ", ec.message()));
  std::sort(kits.begin(), kits.end(), [](const Kit& a, const Kit& b) { return a.name < b.name; });
  return kits;
}

// The certificates <out>/ca/crl.pem revokes (none if it does not exist).
StatusOr<std::vector<RevokedCertificate>> RevokedUnder(const fs::path& ca_dir,
                                                       const std::string& ca_pem) {
  const fs::path crl = ca_dir / "crl.pem";
  std::error_code ec;
  if (!fs::exists(crl, ec)) return std::vector<RevokedCertificate>{};
  FEDSILO_ASSIGN_OR_RETURN(std::string pem, ReadFile(crl.string()));
  StatusOr<std::vector<RevokedCertificate>> revoked = ReadCrl(pem, ca_pem);
  if (!revoked.ok()) return Annotate(revoked.status(), crl.string());
  return revoked;
}

}  // namespace

StatusOr<std::vector<ParticipantRecord>> ListParticipants(const std::string& out_dir) {
  const fs::path out(out_dir);
  const fs::path ca_dir = out / "ca";
  std::error_code ec;
  if (!fs::exists(ca_dir / "ca.crt", ec)) {
    return absl::NotFoundError(
        absl::StrCat((ca_dir / "ca.crt").string(), ": not found; `fedsilo provision` creates it"));
  }
  FEDSILO_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile((ca_dir / "ca.crt").string()));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<RevokedCertificate> revoked, RevokedUnder(ca_dir, ca_pem));
  std::set<std::string> serials;
  for (const RevokedCertificate& r : revoked) serials.insert(r.serial);
  FEDSILO_ASSIGN_OR_RETURN(std::vector<Kit> kits, KitsUnder(out));
  std::vector<ParticipantRecord> records;
  for (const Kit& kit : kits) {
    FEDSILO_ASSIGN_OR_RETURN(std::string pem, ReadFile(kit.certificate_path));
    StatusOr<CertificateSummary> summary = DescribeCertificate(pem);
    if (!summary.ok()) return Annotate(summary.status(), kit.certificate_path);
    ParticipantRecord r;
    r.name = kit.name;
    r.kind = kit.kind;
    r.serial = summary->peer.serial;
    r.not_after = summary->peer.not_after;
    r.revoked = serials.count(r.serial) > 0;
    records.push_back(std::move(r));
  }
  return records;
}

Status RevokeParticipant(const std::string& out_dir, const std::string& name,
                         std::chrono::system_clock::time_point now) {
  const fs::path out(out_dir);
  const fs::path ca_dir = out / "ca";
  if (name == "ca" || !IsValidSiloName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a participant's name"));
  }
  std::error_code ec;
  if (!fs::exists(out / name / "kit.yaml", ec)) {
    return absl::NotFoundError(absl::StrCat((out / name).string(),
                                            ": no such kit (`fedsilo provision list --out ",
                                            out_dir, "` shows them)"));
  }
  FEDSILO_ASSIGN_OR_RETURN(Kit kit, LoadKit((out / name).string()));
  FEDSILO_ASSIGN_OR_RETURN(std::string cert_pem, ReadFile(kit.certificate_path));
  StatusOr<CertificateSummary> summary = DescribeCertificate(cert_pem);
  if (!summary.ok()) return Annotate(summary.status(), kit.certificate_path);
  FEDSILO_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile((ca_dir / "ca.crt").string()));
  FEDSILO_ASSIGN_OR_RETURN(std::string key, ReadFile((ca_dir / "ca.key").string()));
  StatusOr<std::unique_ptr<CertificateAuthority>> ca = CertificateAuthority::Load(ca_pem, key);
  WipeString(key);
  if (!ca.ok()) return Annotate(ca.status(), ca_dir.string());
  FEDSILO_ASSIGN_OR_RETURN(std::vector<RevokedCertificate> revoked, RevokedUnder(ca_dir, ca_pem));
  for (const RevokedCertificate& r : revoked) {
    if (r.serial == summary->peer.serial) {
      return absl::AlreadyExistsError(
          absl::StrCat("'", name, "' (serial ", r.serial, ") is revoked already"));
    }
  }
  revoked.push_back({summary->peer.serial, now});
  FEDSILO_ASSIGN_OR_RETURN(std::string crl, (*ca)->MakeCrl(revoked, now));
  FEDSILO_RETURN_IF_ERROR(WriteFileAtomically((ca_dir / "crl.pem").string(), crl));
  FEDSILO_ASSIGN_OR_RETURN(std::vector<Kit> kits, KitsUnder(out));
  for (const Kit& k : kits) FEDSILO_RETURN_IF_ERROR(WriteFileAtomically(k.crl_path, crl));
  return absl::OkStatus();
}

}  // namespace fedsilo::secure
