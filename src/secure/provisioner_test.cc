#include "secure/provisioner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/file_util.h"
#include "secure/revocation.h"

namespace fedsilo::secure {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const auto kNow = std::chrono::system_clock::from_time_t(1795000000);

constexpr char kFederation[] = R"(
name: hospitals
certificate_days: 90
orchestrator:
  hosts: [localhost, 127.0.0.1]
  port: 9443
participants:
  - {name: hospital-a, kind: silo}
  - {name: hospital-b, kind: silo}
  - {name: alice, kind: user}
)";

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/prov_" + name;
  fs::remove_all(dir);
  return dir;
}

std::string Read(const std::string& path) { return *ReadFile(path); }

int Mode(const std::string& path) {
  struct stat st {};
  stat(path.c_str(), &st);
  return st.st_mode & 0777;
}

TEST(ProvisionerTest, CreatesTheCaAndOneKitPerParticipant) {
  auto spec = ParseFederationSpec(kFederation, "federation.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  const std::string out = FreshDir("create");
  ASSERT_TRUE(ProvisionFederation(*spec, out, kNow).ok());

  EXPECT_EQ(Mode(out + "/ca/ca.key"), 0600);
  const std::string ca = Read(out + "/ca/ca.crt");
  // ca/ keeps the federation file, which add-silo and add-user extend.
  auto kept = LoadFederationSpec(out + "/ca/federation.yaml");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->name, spec->name);
  EXPECT_EQ(kept->orchestrator_port, spec->orchestrator_port);
  EXPECT_EQ(kept->certificate_days, spec->certificate_days);
  ASSERT_EQ(kept->participants.size(), spec->participants.size());
  for (size_t i = 0; i < kept->participants.size(); ++i) {
    EXPECT_EQ(kept->participants[i].name, spec->participants[i].name);
  }
  for (const char* name : {"orchestrator", "hospital-a", "hospital-b", "alice"}) {
    const std::string dir = out + "/" + name;
    auto kit = LoadKit(dir);
    ASSERT_TRUE(kit.ok()) << kit.status();
    EXPECT_EQ(kit->name, name);
    EXPECT_EQ(kit->federation, "hospitals");
    EXPECT_EQ(kit->orchestrator_host, "localhost");
    EXPECT_EQ(kit->orchestrator_port, 9443);
    EXPECT_EQ(Mode(kit->private_key_path), 0600) << name;
    EXPECT_EQ(Read(kit->ca_certificate_path), ca);
    auto peer = VerifyCertificate(Read(kit->certificate_path), ca, kNow);
    ASSERT_TRUE(peer.ok()) << peer.status();
    EXPECT_EQ(peer->name, name);
    EXPECT_EQ(peer->kind, kit->kind);
    EXPECT_EQ(peer->not_after, kNow + std::chrono::hours(24 * 90));
  }
  EXPECT_EQ(LoadKit(out + "/alice")->kind, ParticipantKind::kUser);
  EXPECT_EQ(LoadKit(out + "/orchestrator")->kind, ParticipantKind::kOrchestrator);
  EXPECT_FALSE(fs::exists(out + "/orchestrator/ca.key"));  // the CA key stays in ca/
  EXPECT_TRUE(LoadKitOfKind(out + "/alice", ParticipantKind::kUser, "job commands").ok());
  Status wrong =
      LoadKitOfKind(out + "/alice", ParticipantKind::kOrchestrator, "`fedsilo orchestrator`")
          .status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.message(), HasSubstr("/alice: this is a user kit; you need an orchestrator "
                                         "kit for `fedsilo orchestrator`"));

  // Provisioning again never overwrites.
  Status again = ProvisionFederation(*spec, out, kNow);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.message(), HasSubstr("add-silo"));
}

TEST(ProvisionerTest, AddParticipantKeepsTheCaAndExistingKits) {
  auto spec = ParseFederationSpec(kFederation, "federation.yaml");
  const std::string out = FreshDir("add");
  ASSERT_TRUE(ProvisionFederation(*spec, out, kNow).ok());
  const std::string ca_cert = Read(out + "/ca/ca.crt"), ca_key = Read(out + "/ca/ca.key");
  const std::string a_cert = Read(out + "/hospital-a/hospital-a.crt");

  ASSERT_TRUE(AddParticipant(out, {"hospital-c", ParticipantKind::kSilo}, 30, kNow).ok());
  EXPECT_EQ(Read(out + "/ca/ca.crt"), ca_cert);
  EXPECT_EQ(Read(out + "/ca/ca.key"), ca_key);
  EXPECT_EQ(Read(out + "/hospital-a/hospital-a.crt"), a_cert);
  auto kit = LoadKit(out + "/hospital-c");
  ASSERT_TRUE(kit.ok());
  auto peer = VerifyCertificate(Read(kit->certificate_path), ca_cert, kNow);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->name, "hospital-c");

  EXPECT_EQ(AddParticipant(out, {"hospital-a", ParticipantKind::kSilo}, 30, kNow).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(AddParticipant(FreshDir("none"), {"x", ParticipantKind::kSilo}, 30, kNow).code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(AddParticipant(out, {"bad name", ParticipantKind::kSilo}, 30, kNow).ok());
}

struct BadSpec {
  const char* yaml;
  const char* expected;
};

class FederationSpecErrorTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(FederationSpecErrorTest, NamesTheProblem) {
  auto spec = ParseFederationSpec(GetParam().yaml, "fed.yaml");
  ASSERT_FALSE(spec.ok()) << GetParam().yaml;
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, FederationSpecErrorTest,
    ::testing::Values(
        BadSpec{"name: f\nparticipants: [{name: a, kind: silo}]\ncolour: red\n",
                "fed.yaml:3: unknown key 'colour'"},
        BadSpec{"participants: [{name: a, kind: silo}]\n", "name: must be a name"},
        BadSpec{"name: f\n", "participants: must be a non-empty list"},
        BadSpec{"name: f\nparticipants: [{name: a, kind: admin}]\n",
                "kind of 'a': must be silo or user"},
        BadSpec{"name: f\nparticipants: [{name: a, kind: silo}, {name: a, kind: user}]\n",
                "'a' is used twice"},
        BadSpec{"name: f\nparticipants: [{name: orchestrator, kind: silo}]\n",
                "'orchestrator' is used twice (or is reserved)"},
        BadSpec{"name: f\norchestrator: {port: 70000}\nparticipants: [{name: a, kind: silo}]\n",
                "orchestrator.port: must be an integer in [1, 65535]"},
        BadSpec{"name: f\ncertificate_days: 0\nparticipants: [{name: a, kind: silo}]\n",
                "certificate_days: must be an integer"}));

TEST(ProvisionerTest, RevokeWritesASignedListIntoEveryKitAndListShowsIt) {
  const std::string dir = FreshDir("revoke");
  ASSERT_TRUE(ProvisionFederation(*ParseFederationSpec(kFederation, "f"), dir, kNow).ok());
  auto before = ListParticipants(dir);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->size(), 4u);  // alice, hospital-a, hospital-b, orchestrator
  EXPECT_EQ((*before)[0].name, "alice");
  EXPECT_EQ((*before)[0].kind, ParticipantKind::kUser);
  EXPECT_EQ((*before)[0].not_after, kNow + std::chrono::hours(24 * 90));
  for (const auto& r : *before) EXPECT_FALSE(r.revoked) << r.name;

  ASSERT_TRUE(RevokeParticipant(dir, "hospital-b", kNow).ok());
  ASSERT_TRUE(RevokeParticipant(dir, "alice", kNow).ok());
  auto after = ListParticipants(dir);
  ASSERT_TRUE(after.ok());
  for (const auto& r : *after) {
    EXPECT_EQ(r.revoked, r.name == "hospital-b" || r.name == "alice") << r.name;
  }
  // Every kit has the list, signed by the CA, naming both.
  const std::string ca = Read(dir + "/ca/ca.crt");
  for (const char* kit : {"orchestrator", "hospital-a", "hospital-b", "alice"}) {
    auto list = RevocationList::Open(std::string(dir) + "/" + kit + "/crl.pem", ca);
    ASSERT_TRUE(list.ok()) << kit << ": " << list.status();
    EXPECT_EQ((*list)->size(), 2) << kit;
    EXPECT_TRUE((*list)->IsRevoked((*after)[2].serial));   // hospital-b
    EXPECT_FALSE((*list)->IsRevoked((*after)[1].serial));  // hospital-a
  }
  EXPECT_EQ(RevokeParticipant(dir, "alice", kNow).code(), absl::StatusCode::kAlreadyExists);
  const Status unknown = RevokeParticipant(dir, "mallory", kNow);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("provision list"));
  EXPECT_EQ(RevokeParticipant(dir, "ca", kNow).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RevocationListTest, ItFollowsTheFileAndABrokenOrForeignListChangesNothing) {
  const std::string dir = FreshDir("crl_follow");
  ASSERT_TRUE(ProvisionFederation(*ParseFederationSpec(kFederation, "f"), dir, kNow).ok());
  const std::string ca = Read(dir + "/ca/ca.crt");
  const std::string path = dir + "/orchestrator/crl.pem";
  auto list = RevocationList::Open(path, ca);  // no file yet: nothing revoked
  ASSERT_TRUE(list.ok()) << list.status();
  (*list)->set_recheck(std::chrono::milliseconds(0));
  auto kits = *ListParticipants(dir);
  const std::string a = kits[1].serial, b = kits[2].serial;
  EXPECT_FALSE((*list)->IsRevoked(a));
  ASSERT_TRUE(RevokeParticipant(dir, "hospital-a", kNow).ok());
  EXPECT_TRUE((*list)->IsRevoked(a));  // the new file is read on the next look
  EXPECT_FALSE((*list)->IsRevoked(b));

  // A list signed by another CA, or garbage, is refused: what was revoked stays.
  const std::string other = FreshDir("crl_other");
  ASSERT_TRUE(ProvisionFederation(*ParseFederationSpec(kFederation, "f"), other, kNow).ok());
  ASSERT_TRUE(RevokeParticipant(other, "hospital-b", kNow).ok());
  const std::string foreign = Read(other + "/ca/crl.pem");
  ASSERT_TRUE(WriteFileAtomically(path, foreign).ok());
  EXPECT_TRUE((*list)->IsRevoked(a));
  ASSERT_TRUE(WriteFileAtomically(path, "not a list").ok());
  EXPECT_TRUE((*list)->IsRevoked(a));
  // Deleting the file un-revokes nothing.
  fs::remove(path);
  EXPECT_TRUE((*list)->IsRevoked(a));
  // Opening a broken or foreign list is an error naming the file.
  ASSERT_TRUE(WriteFileAtomically(path, foreign).ok());
  auto reopened = RevocationList::Open(path, ca);
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(reopened.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(reopened.status().message()), HasSubstr("not signed by this federation"));
}

}  // namespace
}  // namespace fedsilo::secure
