// A zygote: a single-threaded `qopt-worker zygote` process, started once by the worker
// with a clean environment, that forks each job's child. The child inherits a process
// that has already loaded LibTorch and run its static initialisers, so a job starts in
// milliseconds instead of the second an exec of the worker costs (bench/job_start_bench).
//
// The worker is multi-threaded (gRPC), so it cannot fork a job child itself without exec;
// the zygote never starts a thread, and never runs job code: it only forks, reaps and
// reports. It dies with the worker (PR_SET_PDEATHSIG) and its children die with it.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sandbox/sandbox.h"

namespace qopt::v1 {
class ZygoteReply;
}

namespace qopt::sandbox {

class Zygote {
 public:
  /// Starts `program zygote` ("/proc/self/exe": this worker) and waits until it is ready.
  static absl::StatusOr<std::unique_ptr<Zygote>> Start(const std::string& program = "/proc/self/exe");
  /// Closes the socket: the zygote kills the children it still has and exits.
  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;

  /// Forks a job child that enters the sandbox with `limits` and runs the job in
  /// `limits.job_dir` (sandbox/job_process.h), with stdout and stderr on `err_fd`, the
  /// frame pipe on `frame_fd` and exactly the environment `env`. Returns its pid.
  absl::StatusOr<pid_t> Spawn(const SandboxOptions& limits, const std::vector<std::string>& env, int frame_fd,
                              int err_fd);
  /// Kills a child that has not been reaped yet (cancellation).
  void Kill(pid_t pid);
  /// Blocks until the child exits; its waitpid status. `cancelled` is polled while it
  /// waits and kills the child when it returns true.
  absl::StatusOr<int> Wait(pid_t pid, const std::function<bool()>& cancelled = nullptr);
  /// False once the zygote has gone (killed from outside): start another.
  bool alive() const;

 private:
  Zygote(pid_t pid, int socket) : pid_(pid), socket_(socket) {}
  // Reads one reply, waiting at most `timeout_ms` (-1: for ever); false on timeout.
  // Called with mu_ held; marks the zygote dead when its socket fails.
  absl::StatusOr<bool> ReadReply(v1::ZygoteReply& reply, int timeout_ms);
  absl::Status Send(const std::string& bytes, const int* fds, int num_fds);

  pid_t pid_;
  int socket_;
  mutable std::mutex mu_;
  bool dead_ = false;
  std::map<pid_t, int> exited_;
};

/// The zygote's side (`qopt-worker zygote`): serves spawn and kill requests on
/// descriptor 3 until the worker closes it. Returns the process exit code.
int RunZygote();

}  // namespace qopt::sandbox
