#include "secure/psi.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fedsilo::secure {
namespace {

using ::testing::HasSubstr;

// Customer ids 0..n-1 of which party p holds those with (id % (p + 2)) != 1,
// and a few of its own no other party has: overlapping, never equal.
std::vector<std::string> IdsOf(int party, int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    if (i % (party + 2) != 1) ids.push_back(absl::StrCat("customer-", i));
  }
  for (int i = 0; i < 5; ++i) ids.push_back(absl::StrCat("only-at-", party, "-", i));
  // Rows in an order of the party's own, not the ids' order.
  std::reverse(ids.begin(), ids.end());
  if (party % 2 == 1) std::rotate(ids.begin(), ids.begin() + 7, ids.end());
  return ids;
}

std::string BlindOk(const PsiParty& party, const std::vector<std::string>& ids) {
  StatusOr<std::string> points = party.Blind(ids);
  EXPECT_TRUE(points.ok()) << points.status();
  return points.ok() ? *points : std::string();
}

// What the parties and the orchestrator do, in one process: every party's
// set blinded by its owner, then by every other party in turn; `relayed`
// gets every byte that would pass through the orchestrator.
std::vector<std::string> FullyBlinded(const std::vector<PsiParty>& parties,
                                      const std::vector<std::vector<std::string>>& ids,
                                      std::vector<std::string>* relayed) {
  std::vector<std::string> full;
  for (size_t p = 0; p < parties.size(); ++p) {
    std::string points = BlindOk(parties[p], ids[p]);
    relayed->push_back(points);
    for (size_t hop = 1; hop < parties.size(); ++hop) {
      StatusOr<std::string> again = parties[(p + hop) % parties.size()].Reblind(points);
      EXPECT_TRUE(again.ok()) << again.status();
      points = std::move(again).value();
      relayed->push_back(points);
    }
    full.push_back(points);
  }
  return full;
}

std::set<std::string> PlainIntersection(const std::vector<std::vector<std::string>>& ids) {
  std::set<std::string> common(ids[0].begin(), ids[0].end());
  for (size_t p = 1; p < ids.size(); ++p) {
    std::set<std::string> kept;
    for (const std::string& id : ids[p]) {
      if (common.count(id) == 1) kept.insert(id);
    }
    common = kept;
  }
  return common;
}

TEST(PsiTest, TwoAndThreePartiesFindThePlainIntersectionInOneSharedOrder) {
  for (int k : {2, 3}) {
    SCOPED_TRACE(absl::StrCat(k, " parties"));
    std::vector<PsiParty> parties;
    std::vector<std::vector<std::string>> ids;
    for (int p = 0; p < k; ++p) {
      StatusOr<PsiParty> party = PsiParty::Create("federation/job-1");
      ASSERT_TRUE(party.ok()) << party.status();
      parties.push_back(std::move(party).value());
      ids.push_back(IdsOf(p, 300));
    }
    std::vector<std::string> relayed;
    const std::vector<std::string> full = FullyBlinded(parties, ids, &relayed);
    StatusOr<std::vector<std::vector<int64_t>>> rows =
        IntersectBlinded(std::vector<absl::string_view>(full.begin(), full.end()));
    ASSERT_TRUE(rows.ok()) << rows.status();

    const std::set<std::string> expected = PlainIntersection(ids);
    ASSERT_GT(expected.size(), 50u);
    ASSERT_LT(expected.size(), ids[0].size());  // some ids are not shared
    ASSERT_EQ(rows->size(), static_cast<size_t>(k));
    std::vector<std::string> order;  // party 0's ids, in the shared order
    for (int64_t row : (*rows)[0]) order.push_back(ids[0][static_cast<size_t>(row)]);
    EXPECT_EQ(std::set<std::string>(order.begin(), order.end()), expected);
    EXPECT_EQ(order.size(), expected.size());  // each once
    for (int p = 1; p < k; ++p) {
      std::vector<std::string> theirs;
      for (int64_t row : (*rows)[p]) theirs.push_back(ids[p][static_cast<size_t>(row)]);
      EXPECT_EQ(theirs, order) << "party " << p << " lines its rows up differently";
    }
  }
}

TEST(PsiTest, NoRelayedByteIsAnIdItsHashOrItsUnblindedPoint) {
  std::vector<PsiParty> parties;
  std::vector<std::vector<std::string>> ids;
  for (int p = 0; p < 3; ++p) {
    StatusOr<PsiParty> party = PsiParty::Create("federation/job-2");
    ASSERT_TRUE(party.ok()) << party.status();
    parties.push_back(std::move(party).value());
    ids.push_back(IdsOf(p, 100));
  }
  std::vector<std::string> relayed;
  FullyBlinded(parties, ids, &relayed);
  ASSERT_EQ(relayed.size(), 9u);
  std::set<std::string> sent;  // every 32-byte point that travelled
  for (const std::string& message : relayed) {
    ASSERT_EQ(message.size() % kPsiPointBytes, 0u);
    for (size_t at = 0; at < message.size(); at += kPsiPointBytes) {
      sent.insert(message.substr(at, kPsiPointBytes));
    }
  }
  const std::string domain = "federation/job-2";
  for (const auto& party_ids : ids) {
    for (const std::string& id : party_ids) {
      // The id's plain SHA-512, and the one the point is made from (psi.cc:
      // the tag with its NUL, the domain's length in 8 bytes little-endian,
      // the domain, the id).
      std::string plain(SHA512_DIGEST_LENGTH, '\0'), keyed(SHA512_DIGEST_LENGTH, '\0');
      SHA512(reinterpret_cast<const unsigned char*>(id.data()), id.size(),
             reinterpret_cast<unsigned char*>(plain.data()));
      std::string hashed("fedsilo-psi-v1", 15);
      hashed += std::string(1, static_cast<char>(domain.size())) + std::string(7, '\0');
      hashed += domain + id;
      SHA512(reinterpret_cast<const unsigned char*>(hashed.data()), hashed.size(),
             reinterpret_cast<unsigned char*>(keyed.data()));
      const std::string point = PsiHashToGroup(domain, id);
      ASSERT_EQ(point.size(), kPsiPointBytes);
      EXPECT_EQ(sent.count(point), 0u) << id << "'s unblinded point was relayed";
      for (const std::string& message : relayed) {
        ASSERT_EQ(message.find(id), std::string::npos) << id << " was relayed";
        for (const std::string& hash : {plain, keyed}) {
          ASSERT_EQ(message.find(hash.substr(0, 16)), std::string::npos)
              << id << "'s hash was relayed";
          ASSERT_EQ(message.find(hash.substr(32, 16)), std::string::npos)
              << id << "'s hash was relayed";
        }
        ASSERT_EQ(message.find(point.substr(0, 16)), std::string::npos)
            << id << "'s unblinded point was relayed";
      }
    }
  }
}

TEST(PsiTest, AnotherJobsOrAnotherScalarsPointsMatchNothing) {
  StatusOr<PsiParty> a = PsiParty::Create("federation/job-a");
  StatusOr<PsiParty> a_again = PsiParty::Create("federation/job-a");
  StatusOr<PsiParty> b = PsiParty::Create("federation/job-b");
  ASSERT_TRUE(a.ok() && a_again.ok() && b.ok());
  const std::vector<std::string> ids = IdsOf(0, 50);
  const std::string by_a = BlindOk(*a, ids);
  // Deterministic for one party: the same ids give the same points.
  EXPECT_EQ(BlindOk(*a, ids), by_a);
  for (const std::string& other : {BlindOk(*a_again, ids), BlindOk(*b, ids)}) {
    StatusOr<std::vector<std::vector<int64_t>>> rows = IntersectBlinded({by_a, other});
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_TRUE((*rows)[0].empty());
  }
  // The same scalars in either order meet: a·b = b·a.
  StatusOr<std::string> ab = b->Reblind(by_a);
  StatusOr<std::string> ba = a->Reblind(BlindOk(*b, ids));
  ASSERT_TRUE(ab.ok() && ba.ok());
  EXPECT_NE(*ab, *ba);  // different domains hash differently
  StatusOr<std::string> ab_same = a_again->Reblind(by_a);
  StatusOr<std::string> ba_same = a->Reblind(BlindOk(*a_again, ids));
  ASSERT_TRUE(ab_same.ok() && ba_same.ok());
  EXPECT_EQ(*ab_same, *ba_same);
}

TEST(PsiTest, BytesThatAreNotPointsAreRefusedByPositionNotContent) {
  StatusOr<PsiParty> party = PsiParty::Create("federation/job-3");
  ASSERT_TRUE(party.ok()) << party.status();
  const std::string good = BlindOk(*party, {"x", "y"});

  StatusOr<std::string> cut = party->Reblind(absl::string_view(good).substr(0, 40));
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cut.status().message(),
              HasSubstr("40 bytes is not a whole number of 32-byte points"));

  for (const std::string& bad : {std::string(kPsiPointBytes, '\xff'),   // not canonical
                                 std::string(kPsiPointBytes, '\0')}) {  // the identity
    StatusOr<std::string> refused = party->Reblind(good + bad);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(refused.status().message(), "blinded ids: point 3 of 3 is not a point of the group");
  }
  EXPECT_TRUE(party->Reblind(good).ok());
  EXPECT_TRUE(party->Reblind("").ok());
}

TEST(PsiTest, APartyMovedFromBlindsNothing) {
  StatusOr<PsiParty> party = PsiParty::Create("federation/job-5");
  ASSERT_TRUE(party.ok()) << party.status();
  const std::string points = BlindOk(*party, {"a", "b"});
  PsiParty moved = std::move(party).value();
  EXPECT_EQ(BlindOk(moved, {"a", "b"}), points);  // the scalar went with it
  // The one left behind has none: it refuses rather than send the identity.
  EXPECT_EQ(party->Blind({"a"}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(party->Reblind(points).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PsiTest, AnIdHeldTwiceOrASetOfPartPointsIsNamedByParty) {
  StatusOr<PsiParty> party = PsiParty::Create("federation/job-4");
  ASSERT_TRUE(party.ok()) << party.status();
  const std::string once = BlindOk(*party, {"a", "b", "c"});
  const std::string twice = BlindOk(*party, {"a", "b", "a"});
  StatusOr<std::vector<std::vector<int64_t>>> rows = IntersectBlinded({once, twice});
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rows.status().message(), "party 2 holds an id twice");

  rows = IntersectBlinded({once, absl::string_view(once).substr(0, 33)});
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rows.status().message(), HasSubstr("party 2: 33 bytes"));

  rows = IntersectBlinded({once, once, absl::string_view()});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->size(), 3u);
  EXPECT_TRUE((*rows)[0].empty());  // a party with no ids: nobody is shared
}

}  // namespace
}  // namespace fedsilo::secure
