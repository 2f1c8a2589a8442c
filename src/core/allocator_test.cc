#include "core/allocator.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>

// The sanitizers bring their own malloc: ASan's and TSan's mallopt() accept
// and ignore every option, and glibc's mallinfo2() then describes a heap
// nobody allocates from. There is no glibc behaviour left to observe, so a
// test that passed there would be testing the sanitizer. The tests below are
// therefore compiled only where glibc's malloc is the one in use; a sanitizer
// build lists no such test (rather than skipping one, which fails that suite).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FEDSILO_MALLOC_REPLACED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define FEDSILO_MALLOC_REPLACED 1
#endif
#endif

#ifndef FEDSILO_MALLOC_REPLACED

namespace fedsilo {
namespace {

// Above glibc's largest dynamic mmap threshold (32 MiB on 64-bit), so that an
// untuned malloc maps it whatever this process freed before.
constexpr size_t kBlock = size_t{64} << 20;

// Keeps the compiler from removing a malloc/free pair whose block is unused.
void* volatile sink;

// What one large allocation did in a process set up by some function.
struct Observation {
  bool ran = false;
  bool block_mapped = false;  // malloc served it with a mapping of its own
  bool freed_kept = false;    // free() returned none of it to the kernel
};

// mallopt settings are process-wide and cannot be undone, so each
// observation is made in a child of its own and sent back through a pipe.
Observation ObserveInChild(const std::function<void()>& setup) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    // TuneAllocatorForModels() must not see the runner's tunables; setup sets
    // its own. (glibc applied the runner's at start-up: one that turns off
    // mappings, say, fails the untuned control below, as it should.)
    unsetenv("GLIBC_TUNABLES");
    setup();
    Observation seen;
    seen.ran = true;
    const struct mallinfo2 before = mallinfo2();
    sink = std::malloc(kBlock);
    const struct mallinfo2 allocated = mallinfo2();
    std::free(sink);
    const struct mallinfo2 freed = mallinfo2();
    seen.block_mapped = sink != nullptr && allocated.hblks > before.hblks &&
                        allocated.hblkhd >= before.hblkhd + kBlock;
    // What malloc holds from the kernel: its heap and its own mappings.
    seen.freed_kept = freed.arena + freed.hblkhd >= allocated.arena + allocated.hblkhd;
    const bool sent = write(fds[1], &seen, sizeof seen) == static_cast<ssize_t>(sizeof seen);
    _exit(sent ? 0 : 1);
  }
  close(fds[1]);
  Observation seen;
  const bool read_all =
      pid > 0 && read(fds[0], &seen, sizeof seen) == static_cast<ssize_t>(sizeof seen);
  close(fds[0]);
  int status = 0;
  if (pid > 0) waitpid(pid, &status, 0);
  if (!read_all || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return {};
  return seen;
}

TEST(AllocatorTest, UntunedMallocMapsALargeBlockAndReturnsItOnFree) {
  // The control: what the tuning has to change is glibc's default.
  const Observation seen = ObserveInChild([] {});
  ASSERT_TRUE(seen.ran);
  EXPECT_TRUE(seen.block_mapped);
  EXPECT_FALSE(seen.freed_kept);
}

TEST(AllocatorTest, TunedMallocServesALargeBlockFromTheHeapAndKeepsItAfterFree) {
  const Observation seen = ObserveInChild([] { TuneAllocatorForModels(); });
  ASSERT_TRUE(seen.ran);
  EXPECT_FALSE(seen.block_mapped);
  EXPECT_TRUE(seen.freed_kept);
}

TEST(AllocatorTest, WithoutTheNoTrimSettingAFreedHeapBlockIsReturned) {
  // Shows that a heap block is kept because of the tuning's trim settings,
  // not merely because it came from the heap rather than a mapping.
  const Observation seen = ObserveInChild([] { mallopt(M_MMAP_MAX, 0); });
  ASSERT_TRUE(seen.ran);
  EXPECT_FALSE(seen.block_mapped);
  EXPECT_FALSE(seen.freed_kept);
}

TEST(AllocatorTest, AnOperatorsMallocTunablesWinOverTheTuning) {
  const Observation seen = ObserveInChild([] {
    setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1", 1);
    TuneAllocatorForModels();
  });
  ASSERT_TRUE(seen.ran);
  EXPECT_TRUE(seen.block_mapped);
  EXPECT_FALSE(seen.freed_kept);
}

TEST(AllocatorTest, TunablesForOtherThanMallocDoNotStopTheTuning) {
  // glibc reads GLIBC_TUNABLES at start-up only, so setting it here changes
  // nothing but what TuneAllocatorForModels() sees.
  const Observation seen = ObserveInChild([] {
    setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
    TuneAllocatorForModels();
  });
  ASSERT_TRUE(seen.ran);
  EXPECT_FALSE(seen.block_mapped);
  EXPECT_TRUE(seen.freed_kept);
}

}  // namespace
}  // namespace fedsilo

#endif  // FEDSILO_MALLOC_REPLACED
