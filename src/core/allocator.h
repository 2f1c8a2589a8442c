// Allocator tuning for processes that move models around.
#ifndef FEDSILO_CORE_ALLOCATOR_H_
#define FEDSILO_CORE_ALLOCATOR_H_

namespace fedsilo {

// Makes glibc's malloc keep freed memory for reuse instead of returning it to
// the kernel: one arena, no separate mappings for large blocks, no trimming.
// Every round allocates and frees buffers of the same model-sized lengths
// (received bytes, parsed tensors, serialised updates); returned memory has
// to be faulted in again page by page next round, which on virtual machines
// runs as slow as a few hundred MB/s and dominated round times (2 silos x 1e7
// values: 2.2 s -> 0.27 s per round). The price is that a process's resident
// memory stays at its peak. Skipped when GLIBC_TUNABLES sets malloc options,
// so an operator's own choice wins.
// Call it early in main(): arenas that threads already hold are kept. Not for
// processes that train several silos at once: one arena slows that down.
void TuneAllocatorForModels();

}  // namespace fedsilo

#endif  // FEDSILO_CORE_ALLOCATOR_H_
