#include "secure/provisioner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/file_util.h"

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

}  // namespace
}  // namespace fedsilo::secure
