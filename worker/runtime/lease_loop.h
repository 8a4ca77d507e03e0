// The service side of qopt-worker: lease a job from qopt-server, fetch its blobs
// (cached by sha256), run the engine with heartbeats carrying progress, upload the
// artifacts and complete or fail the job. Cancellation arrives with a heartbeat reply.
// A training step's checkpoint is uploaded at each epoch's end (checkpoint_uploader.h);
// a job the server gives out again after its worker was lost starts from it.
#pragma once

#include <atomic>
#include <string>

#include "sandbox/sandbox.h"

namespace qopt::worker {

struct LeaseLoopOptions {
  std::string server;     // HOST:PORT
  std::string token;      // worker token (QOPT_TOKEN), may be empty
  std::string tls_ca_pem; // PEM certificate to trust (QOPT_TLS_CA); empty = plaintext
  std::string worker_id;
  std::string device = "cpu";
  std::string cache_dir;  // blobs fetched from the server, by sha256
  std::string work_dir;   // per-job output directories
  int heartbeat_ms = 1000;
  /// Limits of each job's sandboxed process (its folder is set per job).
  sandbox::SandboxOptions job_limits;
};

/// Runs until `stop` is set. Returns a process exit code.
int RunLeaseLoop(const LeaseLoopOptions& options, const std::atomic<bool>& stop);

}  // namespace qopt::worker
