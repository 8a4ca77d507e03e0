// The worker process's peak resident memory, per job: the kernel's high-water mark
// (VmHWM), which a job resets when it starts.
#pragma once

#include <optional>

namespace qopt {

/// Starts a new high-water mark at the current resident size (Linux: /proc/self/clear_refs).
/// Returns false where the system does not allow it; the peak then covers the process's life.
bool ResetPeakMemory();

/// The highest resident memory since the last reset (or process start), in MiB; nullopt
/// where the system does not report it.
std::optional<double> PeakMemoryMiB();

}  // namespace qopt
