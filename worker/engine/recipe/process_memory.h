// The worker process's memory: its peak resident size per job (the kernel's high-water
// mark, VmHWM, which a job resets when it starts), and how the C library keeps what the
// job frees.
#pragma once

#include <optional>

namespace qopt {

/// Starts a new high-water mark at the current resident size (Linux: /proc/self/clear_refs).
/// Returns false where the system does not allow it; the peak then covers the process's life.
bool ResetPeakMemory();

/// The highest resident memory since the last reset (or process start), in MiB; nullopt
/// where the system does not report it.
std::optional<double> PeakMemoryMiB();

/// Keeps memory the job frees in the process for its next tensors, up to 1 GiB above the
/// heap's top, instead of handing it back to the kernel: glibc by default maps each large
/// block afresh and trims the heap's top, so a training step's tensors of tens of MiB each
/// cost page faults and page clearing every step (a QAT step took 3.5-4.7 times its FP32
/// step so; 1.2-1.3 times with this). A job runs in its own process, so the memory returns
/// when the job ends. No effect beyond glibc.
void KeepFreedMemory();

}  // namespace qopt
