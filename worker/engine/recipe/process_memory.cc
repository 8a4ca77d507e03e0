#include "recipe/process_memory.h"

#include <fstream>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace qopt {

bool ResetPeakMemory() {
  std::ofstream clear("/proc/self/clear_refs");
  if (!clear) return false;
  clear << "5";  // 5: reset the peak resident set size to the current one
  clear.flush();
  return static_cast<bool>(clear);
}

std::optional<double> PeakMemoryMiB() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      double kib = 0;
      if (status >> kib) return kib / 1024.0;
      return std::nullopt;
    }
    std::getline(status, key);  // the rest of the line
  }
  return std::nullopt;
}

void KeepFreedMemory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);                  // every block from the heap, reused once freed
  mallopt(M_TRIM_THRESHOLD, 1 << 30);      // the heap's top returns past 1 GiB free only
#endif
}

}  // namespace qopt
