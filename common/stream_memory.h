// glibc malloc settings for processes that stream large gRPC messages (the server, the CLI,
// the service benchmark). Call first thing in main, before any thread starts.
#pragma once

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace qopt {

/// Freed memory past the heap's top that a process keeps for reuse.
inline constexpr int kKeepFreedBytes = 64 << 20;

/// gRPC receives a streamed message into buffers of up to a few MiB on its poller threads
/// and frees them once the message is parsed. With glibc's defaults such a buffer goes back
/// to the kernel (munmap, or an arena trimmed with madvise), and the next message faults
/// every page in again; with one arena per thread, buffers allocated on one thread and
/// freed on another also keep the arenas' heaps growing and shrinking. On a 2-core VM page
/// faults took a third of the server's CPU in a 512 MiB upload (perf,
/// bench/results/service.md). So: large blocks come from the heap and stay there once
/// freed (up to kKeepFreedBytes past its top), and all threads share one arena. A process
/// holds at most kKeepFreedBytes more while idle.
inline void KeepStreamBuffersForReuse() {
  constexpr int kLargestMmapBytes = 32 << 20;  // glibc's own ceiling for its dynamic threshold
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, kLargestMmapBytes);
  mallopt(M_TRIM_THRESHOLD, kKeepFreedBytes);
}

/// Grows the heap, at start, by the memory a large upload's buffers come to occupy, and
/// touches every page of it, so that the first upload reuses memory instead of faulting it
/// in. gRPC's receive buffers and the chunks waiting to be written and hashed grew a fresh
/// server's heap by about 50 MiB in a 512 MiB upload; on the 2-core VMs memory a process
/// touches for the first time is slow to get (the host hands it over page by page), and
/// that upload took 0.57-0.60 s against 0.50-0.55 s with the heap grown beforehand
/// (bench/results/service.md). A server holds this memory after its first upload anyway.
/// Call after KeepStreamBuffersForReuse, so the memory stays in the heap once freed.
inline void GrowHeapForStreams() {
  constexpr size_t kBlock = 1 << 20;  // below the mmap threshold: the heap serves it
  constexpr size_t kBytes = 48 << 20;
  static_assert(kBytes < static_cast<size_t>(kKeepFreedBytes), "the freed blocks must stay in the heap");
  std::vector<void*> blocks;
  for (size_t i = 0; i < kBytes / kBlock; ++i) {
    void* block = std::malloc(kBlock);
    if (block == nullptr) break;
    std::memset(block, 1, kBlock);  // not 0: malloc + memset 0 becomes calloc, which touches nothing
    asm volatile("" : : "r"(block) : "memory");  // the writes must happen
    blocks.push_back(block);
  }
  for (void* block : blocks) std::free(block);
}

}  // namespace qopt
