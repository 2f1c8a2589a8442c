#include "transport/versions.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/job_schema.h"
#include "core/version.h"

namespace fedsilo::transport {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

PeerVersions Peer(const std::string& release, int pmin, int pmax, std::vector<int> schemas) {
  return PeerVersions{release, pmin, pmax, std::move(schemas)};
}

TEST(VersionsTest, OurHelloSaysWhatThisBuildSpeaksAndReads) {
  const fedsilo::v1::SiloMessage m = MakeHello({"digits"});
  StatusOr<PeerVersions> v = VersionsOf(m.hello());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->release, FedsiloRelease());
  EXPECT_EQ(v->protocol_min, kOldestProtocolVersion);
  EXPECT_EQ(v->protocol_max, kProtocolVersion);
  EXPECT_EQ(v->job_schemas.front(), kOldestJobSchemaVersion);
  EXPECT_EQ(v->job_schemas.back(), kJobSchemaVersion);
  EXPECT_EQ(m.hello().datasets(0), "digits");
  StatusOr<PeerVersions> older = VersionsOf(MakeHello({}, {1}).hello());
  ASSERT_TRUE(older.ok());
  EXPECT_EQ(older->job_schemas, std::vector<int>{1});
}

// fedsilo 0.1 sent datasets and its release only.
TEST(VersionsTest, AHelloWithoutVersionsIsReadAsFedsilo01) {
  fedsilo::v1::SiloHello hello;
  hello.add_datasets("digits");
  hello.set_version("fedsilo 0.1.0");
  StatusOr<PeerVersions> v = VersionsOf(hello);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->protocol_min, 1);
  EXPECT_EQ(v->protocol_max, 1);
  EXPECT_EQ(v->job_schemas, std::vector<int>{1});
  StatusOr<Agreement> agreed = Negotiate("old", *v);
  ASSERT_TRUE(agreed.ok()) << agreed.status();
  EXPECT_EQ(agreed->protocol, 1);
  EXPECT_EQ(agreed->job_schema, 1);
}

TEST(VersionsTest, AHelloThatContradictsItselfIsRefused) {
  fedsilo::v1::SiloHello reversed;
  reversed.set_protocol_min(3);
  reversed.set_protocol_max(2);
  EXPECT_FALSE(VersionsOf(reversed).ok());
  fedsilo::v1::SiloHello zero;
  zero.add_job_schemas(0);
  EXPECT_FALSE(VersionsOf(zero).ok());
  fedsilo::v1::SiloHello many;
  for (int i = 1; i <= 65; ++i) many.add_job_schemas(i);
  EXPECT_FALSE(VersionsOf(many).ok());
  // A release string is the peer's to choose: bounded, and printable only.
  fedsilo::v1::SiloHello noisy;
  noisy.set_version(std::string("fedsilo\n9\x1b[2J") + std::string(200, 'x'));
  StatusOr<PeerVersions> v = VersionsOf(noisy);
  ASSERT_TRUE(v.ok());
  EXPECT_LE(v->release.size(), 64u);
  EXPECT_EQ(v->release.find_first_of("\n\x1b"), std::string::npos);
}

TEST(VersionsTest, TheNewestCommonVersionsAreAgreed) {
  const PeerVersions orchestrator = Peer("fedsilo 0.3.0", 1, 2, {1, 2, 3});
  StatusOr<Agreement> same = Negotiate("s", Peer("fedsilo 0.3.0", 1, 2, {1, 2, 3}), orchestrator);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->protocol, 2);
  EXPECT_EQ(same->job_schema, 3);
  StatusOr<Agreement> older = Negotiate("s", Peer("fedsilo 0.2.0", 1, 1, {1, 2}), orchestrator);
  ASSERT_TRUE(older.ok());
  EXPECT_EQ(older->protocol, 1);
  EXPECT_EQ(older->job_schema, 2);
  StatusOr<Agreement> newer = Negotiate("s", Peer("fedsilo 0.4.0", 2, 3, {2, 3, 4}), orchestrator);
  ASSERT_TRUE(newer.ok());
  EXPECT_EQ(newer->protocol, 2);
  EXPECT_EQ(newer->job_schema, 3);
}

TEST(VersionsTest, NoCommonVersionRefusesTheSiloNamingBothReleasesAndWhatToUpgrade) {
  const PeerVersions orchestrator = Peer("fedsilo 0.5.0", 2, 3, {2, 3});
  StatusOr<Agreement> old = Negotiate("hospital-a", Peer("fedsilo 0.1.0", 1, 1, {1}), orchestrator);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(old.status().message(),
            "silo 'hospital-a' runs fedsilo 0.1.0, which speaks protocol 1; this orchestrator "
            "runs fedsilo 0.5.0, which speaks protocol 2–3: upgrade silo 'hospital-a'");
  StatusOr<Agreement> future =
      Negotiate("hospital-a", Peer("fedsilo 0.9.0", 4, 4, {2}), orchestrator);
  ASSERT_FALSE(future.ok());
  EXPECT_THAT(std::string(future.status().message()),
              HasSubstr("speaks protocol 4; this orchestrator runs fedsilo 0.5.0, which speaks "
                        "protocol 2–3: upgrade the orchestrator"));
  StatusOr<Agreement> schemas =
      Negotiate("hospital-a", Peer("fedsilo 0.9.0", 2, 2, {4, 5}), orchestrator);
  ASSERT_FALSE(schemas.ok());
  EXPECT_THAT(std::string(schemas.status().message()),
              HasSubstr("reads job schema 4, 5; this orchestrator runs fedsilo 0.5.0, which reads "
                        "job schema 2, 3: upgrade the orchestrator"));
}

TEST(VersionsTest, AJobNeedingANewerSchemaIsRefusedForThatSiloByName) {
  JobConfig job;
  job.data.dataset = "digits";
  job.federation.silos = {"hospital-a"};
  StatusOr<std::string> plain = JobForSilo(job, "hospital-a", "fedsilo 0.1.0", 1);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(*plain, Not(HasSubstr("lr_decay")));
  job.training.lr_decay = 0.9;
  StatusOr<std::string> refused = JobForSilo(job, "hospital-a", "fedsilo 0.1.0", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message(),
            "silo 'hospital-a' runs fedsilo 0.1.0, which reads job schema 1; this job sets "
            "training.lr_decay, which needs job schema 2: upgrade silo 'hospital-a' to fedsilo "
            "0.2.0 or later, or leave training.lr_decay at its default");
  StatusOr<std::string> current = JobForSilo(job, "hospital-b", FedsiloRelease(), 2);
  ASSERT_TRUE(current.ok());
  EXPECT_THAT(*current, HasSubstr("lr_decay: 0.9"));
}

}  // namespace
}  // namespace fedsilo::transport
