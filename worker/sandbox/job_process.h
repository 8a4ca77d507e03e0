// Each job runs in a child process of the worker: `qopt-worker job`, which enters the
// sandbox (sandbox.h) before it reads its recipe. A crash, an abort or the kernel's OOM
// killer ends the child, and the job fails with the child's last error line; the worker
// goes on to its next job.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "recipe/runner.h"
#include "sandbox/sandbox.h"
#include "sandbox/zygote.h"

namespace qopt::sandbox {

struct JobProcessOptions {
  /// The job's folder (created, emptied by the caller): recipe, artifacts and temporary
  /// files live beneath it. Artifacts go to `job_dir`/out.
  std::string job_dir;
  /// Forks the child from this zygote (milliseconds) where given; otherwise the child is
  /// `program` (about a second: exec and loading LibTorch); "/proc/self/exe" is this worker.
  Zygote* zygote = nullptr;
  std::string program = "/proc/self/exe";
  SandboxOptions limits;
};

/// The variable of the child's environment that names the worker (RunOptions::worker_id).
inline constexpr const char* kWorkerIdVariable = "QOPT_WORKER_ID";

/// The one file where a job's child keeps its training checkpoint: `job_dir`/checkpoint.qopt
/// (beside out/, so never an artifact). The child chooses no path; what it writes there is
/// untrusted data.
std::string JobCheckpointPath(const std::string& job_dir);

/// Runs `recipe` in a sandboxed child, which names `run.worker_id` in its report.
/// Progress frames reach `run.on_progress` as they arrive; `run.cancelled` is polled and
/// kills the child. `run.out_dir` and `run.checkpoint_path` are ignored: the artifacts are in `options.job_dir`/out, and the
/// child keeps its checkpoint in JobCheckpointPath(`options.job_dir`), resuming from a
/// checkpoint the caller placed there; `run.on_checkpoint` is called, on this thread
/// between frames (keep it short), after each new one.
absl::StatusOr<RunSummary> RunJobProcess(const v1::Recipe& recipe, const RunOptions& run,
                                         const JobProcessOptions& options);

/// In a job child right after fork (async-signal-safe, so before exec too): the frame pipe
/// on descriptor 3, stdout and stderr on `err_fd`, stdin from /dev/null, none of them
/// close-on-exec, every other descriptor closed. False if a step failed.
bool SetUpJobChildDescriptors(int frame_fd, int err_fd);

/// The child's side (`qopt-worker job --job-dir DIR`): enters the sandbox, reads
/// DIR/recipe.pb, runs it with artifacts in DIR/out and its checkpoint in
/// JobCheckpointPath(DIR), and writes frames to descriptor 3.
/// Returns the process exit code.
int RunJobChild(const SandboxOptions& limits);

}  // namespace qopt::sandbox
