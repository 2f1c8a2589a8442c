#include "secure/secagg_crypto.h"

#include <gtest/gtest.h>

#include <vector>

namespace fedsilo::secure {
namespace {

TEST(SecAggCryptoTest, BothEndsAgreeOnTheSameKeyAndContextSeparatesKeys) {
  const KeyPair a = NewKeyPair();
  const KeyPair b = NewKeyPair();
  const KeyPair c = NewKeyPair();
  StatusOr<Key32> ab = AgreeKey(a, b.public_key, "ctx");
  StatusOr<Key32> ba = AgreeKey(b, a.public_key, "ctx");
  ASSERT_TRUE(ab.ok() && ba.ok());
  EXPECT_EQ(*ab, *ba);
  EXPECT_NE(*ab, *AgreeKey(a, c.public_key, "ctx"));
  EXPECT_NE(*ab, *AgreeKey(a, b.public_key, "other"));
  EXPECT_FALSE(AgreeKey(a, Key32{}, "ctx").ok());  // low-order point
}

TEST(SecAggCryptoTest, SealedDataOpensOnlyWithTheKeyAndItsAssociatedData) {
  const Key32 key = RandomKey32();
  const std::string sealed = Seal(key, "secret share", "a|b");
  EXPECT_EQ(*Open(key, sealed, "a|b"), "secret share");
  EXPECT_EQ(Open(key, sealed, "a|c").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Open(RandomKey32(), sealed, "a|b").status().code(), absl::StatusCode::kDataLoss);
  std::string flipped = sealed;
  flipped[flipped.size() / 2] ^= 1;
  EXPECT_EQ(Open(key, flipped, "a|b").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Open(key, "short", "a|b").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(Seal(key, "x", ""), Seal(key, "x", ""));  // fresh nonces
}

TEST(SecAggCryptoTest, AnyThresholdSharesRecoverTheSecretAndFewerDoNot) {
  const Key32 secret = RandomKey32();
  const std::vector<Key32> shares = ShamirSplit(secret, 5, 3);
  ASSERT_EQ(shares.size(), 5u);
  EXPECT_EQ(ShamirCombine({{1, shares[0]}, {3, shares[2]}, {5, shares[4]}}), secret);
  EXPECT_EQ(ShamirCombine({{2, shares[1]}, {3, shares[2]}, {4, shares[3]}}), secret);
  EXPECT_EQ(ShamirCombine(
                {{1, shares[0]}, {2, shares[1]}, {3, shares[2]}, {4, shares[3]}, {5, shares[4]}}),
            secret);
  EXPECT_NE(ShamirCombine({{1, shares[0]}, {2, shares[1]}}), secret);
  for (const Key32& share : shares) EXPECT_NE(share, secret);
}

TEST(SecAggCryptoTest, MasksAreDeterministicAndCancel) {
  const Key32 seed = RandomKey32();
  std::vector<uint32_t> values(10000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<uint32_t>(i);
  std::vector<uint32_t> masked = values;
  AddMask(seed, absl::MakeSpan(masked), false);
  size_t unchanged = 0;
  for (size_t i = 0; i < values.size(); ++i) unchanged += masked[i] == values[i];
  EXPECT_LT(unchanged, 3u);
  // A different length reads the same stream prefix.
  std::vector<uint32_t> prefix(values.begin(), values.begin() + 5000);
  AddMask(seed, absl::MakeSpan(prefix), false);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), masked.begin()));
  AddMask(seed, absl::MakeSpan(masked), true);
  EXPECT_EQ(masked, values);
}

TEST(SecAggCryptoTest, CommitmentsBindTheKey) {
  const Key32 key = RandomKey32();
  EXPECT_EQ(Commit(key, "c"), Commit(key, "c"));
  EXPECT_NE(Commit(key, "c"), Commit(RandomKey32(), "c"));
  EXPECT_NE(Commit(key, "c"), key);
}

}  // namespace
}  // namespace fedsilo::secure
