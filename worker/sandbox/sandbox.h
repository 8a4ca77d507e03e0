// The confinement a job's child process enters before it reads its recipe: what a model
// could do if something in LibTorch let it escape the tensor ops admission allows.
// Torch-free; see docs/sandbox.md for what each layer stops.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt::sandbox {

struct SandboxOptions {
  /// The job's own folder: the only place it may create, write or remove files.
  std::string job_dir;
  /// Address-space limit in MiB (RLIMIT_AS); 0 = none (CUDA reserves huge address ranges).
  int64_t memory_mb = 0;
  /// CPU-time limit in seconds (RLIMIT_CPU); 0 = none.
  int64_t cpu_seconds = 0;
  /// Largest file the job may write (RLIMIT_FSIZE), MiB.
  int64_t max_file_mb = 64 * 1024;
  /// Open descriptors (RLIMIT_NOFILE).
  int64_t max_open_files = 256;
  /// Processes and threads of the job's user (RLIMIT_NPROC).
  int64_t max_processes = 4096;
  /// When started as root: the unprivileged user and group to become.
  bool drop_root = true;
  uint32_t uid = 65534;
  uint32_t gid = 65534;
};

/// What was applied, for the job's log ("rlimits, no network (namespace), uid 65534, ...").
struct SandboxReport {
  std::vector<std::string> layers;
  std::string Describe() const;
};

/// Confines the calling process for good (call it single-threaded, before any job code):
/// no new privileges, killed with its parent, rlimits, a new network namespace where the
/// kernel allows (as root, or through an unprivileged user namespace), an unprivileged uid
/// when root, Landlock (writes only beneath `job_dir`) where the kernel has it, and a
/// seccomp filter that denies sockets, exec, ptrace, namespaces, mounts, module and kernel
/// interfaces and identity changes (EPERM), so a denied call is an error, not a kill.
/// Fails if a layer that must hold (rlimits, no_new_privs, seccomp, the uid drop as root)
/// cannot be applied.
absl::StatusOr<SandboxReport> EnterSandbox(const SandboxOptions& options);

}  // namespace qopt::sandbox
