// glibc malloc settings for processes that stream large gRPC messages (the server, the CLI,
// the service benchmark). Call first thing in main, before any thread starts.
#pragma once

#include <malloc.h>

namespace qopt {

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
  constexpr int kKeepFreedBytes = 64 << 20;
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, kLargestMmapBytes);
  mallopt(M_TRIM_THRESHOLD, kKeepFreedBytes);
}

}  // namespace qopt
