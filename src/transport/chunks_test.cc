#include "transport/chunks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fedsilo::transport {
namespace {

using ::testing::HasSubstr;

// The chunks ForEachChunk makes of `bytes`, all written successfully.
std::vector<fedsilo::v1::Chunk> ChunksOf(const std::string& bytes) {
  std::vector<fedsilo::v1::Chunk> chunks;
  EXPECT_TRUE(ForEachChunk(bytes, [&](const fedsilo::v1::Chunk& c) {
    chunks.push_back(c);
    return true;
  }));
  return chunks;
}

fedsilo::v1::Chunk MakeChunk(std::string data, bool last) {
  fedsilo::v1::Chunk c;
  c.set_data(std::move(data));
  c.set_last(last);
  return c;
}

// Bytes of every value (zeros included), from a fixed seed.
std::string Payload(size_t n) {
  std::mt19937 rng(7);
  std::string bytes(n, '\0');
  for (char& b : bytes) b = static_cast<char>(rng() & 0xff);
  return bytes;
}

TEST(ForEachChunkTest, AnEmptyPayloadIsOneEmptyLastChunk) {
  const std::vector<fedsilo::v1::Chunk> chunks = ChunksOf("");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].data(), "");
  EXPECT_TRUE(chunks[0].last());
}

// Sizes at the chunk boundaries: k whole chunks, and one byte more.
TEST(ForEachChunkTest, ChunkCountsAndSizesAtChunkBoundaries) {
  struct Case {
    size_t bytes;
    size_t chunks;
    size_t last_chunk_bytes;
  };
  for (const Case& c : std::vector<Case>{{1, 1, 1},
                                         {kChunkBytes - 1, 1, kChunkBytes - 1},
                                         {kChunkBytes, 1, kChunkBytes},
                                         {kChunkBytes + 1, 2, 1},
                                         {2 * kChunkBytes, 2, kChunkBytes},
                                         {2 * kChunkBytes + 1, 3, 1},
                                         {3 * kChunkBytes, 3, kChunkBytes}}) {
    SCOPED_TRACE(c.bytes);
    const std::vector<fedsilo::v1::Chunk> chunks = ChunksOf(Payload(c.bytes));
    ASSERT_EQ(chunks.size(), c.chunks);
    for (size_t i = 0; i + 1 < chunks.size(); ++i) {
      EXPECT_EQ(chunks[i].data().size(), kChunkBytes) << "chunk " << i;
      EXPECT_FALSE(chunks[i].last()) << "chunk " << i;
    }
    EXPECT_EQ(chunks.back().data().size(), c.last_chunk_bytes);
    EXPECT_TRUE(chunks.back().last());
  }
}

TEST(ForEachChunkTest, NoChunkIsLargerThanKChunkBytes) {
  // The documented number (docs/operations.md): models are streamed in chunks of at most 1 MiB.
  static_assert(kChunkBytes == 1u << 20, "docs/operations.md documents 1 MiB chunks");
  EXPECT_EQ(kChunkBytes, size_t{1} << 20);
  for (size_t n : {size_t{0}, kChunkBytes / 3, kChunkBytes, 5 * kChunkBytes / 2}) {
    for (const fedsilo::v1::Chunk& c : ChunksOf(Payload(n))) {
      EXPECT_LE(c.data().size(), kChunkBytes) << n << " bytes";
    }
  }
}

TEST(ForEachChunkTest, AFailedWriteStopsTheChunkingAndReturnsFalse) {
  const std::string bytes = Payload(3 * kChunkBytes);
  int writes = 0;
  EXPECT_FALSE(ForEachChunk(bytes, [&](const fedsilo::v1::Chunk&) { return ++writes < 2; }));
  EXPECT_EQ(writes, 2);  // the third chunk was not written

  writes = 0;
  EXPECT_FALSE(ForEachChunk("", [&](const fedsilo::v1::Chunk&) { return ++writes > 1; }));
  EXPECT_EQ(writes, 1);
}

TEST(ChunkAssemblerTest, ChunkedBytesComeBackTheSame) {
  for (size_t n : {size_t{0}, size_t{1}, kChunkBytes, kChunkBytes + 1, 5 * kChunkBytes / 2}) {
    SCOPED_TRACE(n);
    const std::string bytes = Payload(n);
    ChunkAssembler assembler;
    assembler.Begin(bytes.size(), "model");
    EXPECT_TRUE(assembler.active());
    ASSERT_TRUE(ForEachChunk(bytes, [&](const fedsilo::v1::Chunk& c) {
      EXPECT_FALSE(assembler.complete());  // not before the last chunk
      Status added = assembler.Add(c);
      EXPECT_TRUE(added.ok()) << added;
      return added.ok();
    }));
    ASSERT_TRUE(assembler.complete());
    EXPECT_FALSE(assembler.active());
    EXPECT_EQ(assembler.Take(), bytes);
  }
}

// The size is reached without the last mark: the assembler waits for the mark.
TEST(ChunkAssemblerTest, TheAnnouncedSizeWithoutTheLastMarkIsNotYetComplete) {
  ChunkAssembler assembler;
  assembler.Begin(4, "model");
  ASSERT_TRUE(assembler.Add(MakeChunk("abcd", false)).ok());
  EXPECT_FALSE(assembler.complete());
  EXPECT_TRUE(assembler.active());
  ASSERT_TRUE(assembler.Add(MakeChunk("", true)).ok());
  ASSERT_TRUE(assembler.complete());
  EXPECT_EQ(assembler.Take(), "abcd");
}

TEST(ChunkAssemblerTest, BytesBeyondTheAnnouncedSizeAreRefusedNamingThePayload) {
  struct Case {
    const char* name;
    std::vector<fedsilo::v1::Chunk> chunks;  // the last one is refused
  };
  for (const Case& c : std::vector<Case>{
           {"one chunk too long", {MakeChunk("abcde", true)}},
           {"a second chunk too many", {MakeChunk("abcd", false), MakeChunk("e", true)}},
           {"more after the size, unmarked", {MakeChunk("abc", false), MakeChunk("de", false)}},
       }) {
    SCOPED_TRACE(c.name);
    ChunkAssembler assembler;
    assembler.Begin(4, "update from silo 'b'");
    for (size_t i = 0; i + 1 < c.chunks.size(); ++i) ASSERT_TRUE(assembler.Add(c.chunks[i]).ok());
    Status refused = assembler.Add(c.chunks.back());
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(refused.message(), "update from silo 'b': more bytes than the announced 4");
    EXPECT_FALSE(assembler.active());
    EXPECT_FALSE(assembler.complete());
    // Nothing more is taken for this payload.
    EXPECT_FALSE(assembler.Add(MakeChunk("", true)).ok());
  }
}

TEST(ChunkAssemblerTest, AnyBytesForAnEmptyPayloadAreRefused) {
  ChunkAssembler assembler;
  assembler.Begin(0, "scores");
  Status refused = assembler.Add(MakeChunk("x", true));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "scores: more bytes than the announced 0");
}

TEST(ChunkAssemblerTest, ALastChunkArrivingShortIsRefusedNamingBothSizes) {
  for (const std::vector<fedsilo::v1::Chunk>& chunks : std::vector<std::vector<fedsilo::v1::Chunk>>{
           {MakeChunk("abc", true)},
           {MakeChunk("ab", false), MakeChunk("c", true)},
           {MakeChunk("", true)},
       }) {
    ChunkAssembler assembler;
    assembler.Begin(4, "model of task");
    for (size_t i = 0; i + 1 < chunks.size(); ++i) ASSERT_TRUE(assembler.Add(chunks[i]).ok());
    Status refused = assembler.Add(chunks.back());
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    const size_t arrived = chunks.size() == 1 ? chunks[0].data().size() : 3;
    EXPECT_EQ(refused.message(),
              "model of task: " + std::to_string(arrived) + " bytes arrived, 4 were announced");
    EXPECT_FALSE(assembler.active());
    EXPECT_FALSE(assembler.complete());
  }
}

TEST(ChunkAssemblerTest, AChunkAfterCompletionIsRefused) {
  ChunkAssembler assembler;
  assembler.Begin(2, "model");
  ASSERT_TRUE(assembler.Add(MakeChunk("ab", true)).ok());
  ASSERT_TRUE(assembler.complete());
  for (const fedsilo::v1::Chunk& late : {MakeChunk("", true), MakeChunk("c", false)}) {
    Status refused = assembler.Add(late);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(refused.message()), HasSubstr("without a header"));
  }
  // The payload that completed is unharmed.
  ASSERT_TRUE(assembler.complete());
  EXPECT_EQ(assembler.Take(), "ab");
}

TEST(ChunkAssemblerTest, AChunkBeforeBeginIsRefused) {
  ChunkAssembler assembler;
  EXPECT_FALSE(assembler.active());
  Status refused = assembler.Add(MakeChunk("", true));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "a chunk arrived without a header");
}

// After Take() the assembler holds nothing: it refuses chunks until the next
// Begin(), and the next payload does not start with the last one's bytes.
TEST(ChunkAssemblerTest, TakeResetsTheAssembler) {
  ChunkAssembler assembler;
  assembler.Begin(3, "first");
  ASSERT_TRUE(assembler.Add(MakeChunk("abc", true)).ok());
  EXPECT_EQ(assembler.Take(), "abc");
  EXPECT_FALSE(assembler.complete());
  EXPECT_FALSE(assembler.active());
  EXPECT_FALSE(assembler.Add(MakeChunk("", true)).ok());

  assembler.Begin(2, "second");
  ASSERT_TRUE(assembler.Add(MakeChunk("de", true)).ok());
  ASSERT_TRUE(assembler.complete());
  EXPECT_EQ(assembler.Take(), "de");
}

// Begin() while a payload is half assembled (or failed) starts afresh.
TEST(ChunkAssemblerTest, BeginDropsAHalfAssembledOrFailedPayload) {
  ChunkAssembler assembler;
  assembler.Begin(4, "first");
  ASSERT_TRUE(assembler.Add(MakeChunk("ab", false)).ok());
  assembler.Begin(2, "second");
  ASSERT_TRUE(assembler.Add(MakeChunk("cd", true)).ok());
  EXPECT_EQ(assembler.Take(), "cd");

  assembler.Begin(1, "third");
  ASSERT_FALSE(assembler.Add(MakeChunk("toolong", true)).ok());
  assembler.Begin(1, "fourth");
  ASSERT_TRUE(assembler.Add(MakeChunk("e", true)).ok());
  EXPECT_EQ(assembler.Take(), "e");
}

}  // namespace
}  // namespace fedsilo::transport
