#include "core/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace fedsilo {

void TuneAllocatorForModels() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return;
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace fedsilo
