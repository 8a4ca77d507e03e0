// Jobs, their events and artifacts in SQLite. Job states move
// QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED; a RUNNING job holds a lease with an
// expiry that heartbeats extend, and an expired lease puts the job back in the queue
// until it has used max_attempts. Every change appends an event with a per-job sequence
// number, so watchers can resume. Thread-safe; one connection, one writer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qopt/v1/service.pb.h"
#include "store/store_db.h"

namespace qopt::server {

struct LeaseGrant {
  std::string job_id;
  std::string lease_id;
  v1::Recipe recipe;
  int64_t expires_unix_ms = 0;
  std::string token;  // the lease's secret; only its hash is stored
  /// The checkpoint an earlier lease of the job uploaded; "" when none.
  std::string checkpoint_sha256;
};

/// The lease a lease token was issued for.
struct LeaseScope {
  std::string job_id;
  std::string lease_id;
};

/// What a job needs of a worker: "cpu" or "cuda" (from the recipe's device).
std::string DeviceKind(const v1::Recipe& recipe);

class JobStore {
 public:
  struct Options {
    int64_t lease_ms = 10000;  // lease length; heartbeats extend it
    int max_attempts = 3;
    /// Jobs of one tenant running at once; 0 = no limit.
    int max_running_per_tenant = 0;
    /// Longest run of a job (its recipe may ask for less); 0 = no limit.
    int64_t max_job_ms = 0;
  };
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path, Options options);
  /// Shares a database with other stores (the catalog).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(std::shared_ptr<StoreDb> db, Options options);

  /// Queues a job. The same (tenant, request_id) returns the first job unchanged.
  /// `inputs` are the blobs it reads (kept while the job exists).
  absl::StatusOr<v1::Job> Submit(const std::string& tenant, const v1::Recipe& recipe,
                                 int priority, const std::string& request_id,
                                 const std::vector<std::string>& inputs = {});
  /// NotFound for unknown ids and for other tenants' jobs.
  absl::StatusOr<v1::Job> Get(const std::string& tenant, const std::string& id);
  /// The tenant's jobs, newest first, in any of `states` (empty = all).
  absl::StatusOr<v1::ListJobsResponse> List(const std::string& tenant,
                                            const std::vector<v1::JobState>& states,
                                            int page_size, const std::string& page_token);
  /// Queued jobs end at once; running ones when their worker next heartbeats.
  absl::StatusOr<v1::Job> Cancel(const std::string& tenant, const std::string& id);
  /// Deletes a finished job with its events, report and artifacts; FailedPrecondition while
  /// it is queued or running. Returns the blobs it used and produced (to release).
  absl::StatusOr<std::vector<std::string>> Delete(const std::string& tenant, const std::string& id);
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& tenant,
                                                   const std::string& id, int64_t after);
  absl::StatusOr<std::string> Report(const std::string& tenant, const std::string& id);
  /// Artifact of a tenant's job by name.
  absl::StatusOr<v1::Artifact> GetArtifact(const std::string& tenant, const std::string& id,
                                           const std::string& name);

  /// Blocks until an event after `after` exists for the job, the job ends, or timeout.
  void WaitForEvent(const std::string& id, int64_t after, int timeout_ms);

  // Workers.
  /// The next queued job this worker can serve (`device_kinds`: "cpu", "cuda"), or
  /// NotFound after `wait_ms`. Fair share: the job of the tenant with the fewest running
  /// jobs first (tenants at max_running_per_tenant are skipped), then by priority, then
  /// by age.
  absl::StatusOr<LeaseGrant> Lease(const std::string& worker_id,
                                   const std::vector<std::string>& device_kinds, int wait_ms);
  /// The lease `token` was issued for: Unauthenticated for an unknown token,
  /// FailedPrecondition once that lease is no longer held.
  absl::StatusOr<LeaseScope> LeaseOfToken(const std::string& token);
  /// True when the job reads `sha256`: one of its input blobs, or its checkpoint.
  absl::StatusOr<bool> Reads(const std::string& job_id, const std::string& sha256);
  /// Extends the lease and records progress; returns true when the job was cancelled.
  absl::StatusOr<std::pair<bool, int64_t>> Heartbeat(const v1::HeartbeatRequest& hb);
  /// Runs `publish` (which makes the artifact's blob visible) and records the artifact,
  /// both while the lease is checked held and under the store's lock, so a blob is never
  /// visible without the row that keeps it (garbage collection sees both or neither).
  absl::Status AddArtifact(const std::string& job_id, const std::string& lease_id,
                           const v1::Artifact& artifact,
                           const std::function<absl::Status()>& publish = nullptr);
  /// Makes `checkpoint` the job's checkpoint, replacing the one before, with an event;
  /// `publish` as in AddArtifact. Returns the replaced checkpoint's blob ("" when none, or
  /// when it is the same), which may now be unreferenced. The job drops its checkpoint
  /// when it reaches a final state (a trigger of the schema).
  absl::StatusOr<std::string> SetCheckpoint(const std::string& job_id, const std::string& lease_id,
                                            const v1::CheckpointHeader& checkpoint,
                                            const std::function<absl::Status()>& publish = nullptr);
  /// The job's checkpoint blob; "" when it has none.
  absl::StatusOr<std::string> Checkpoint(const std::string& job_id);
  absl::Status Complete(const std::string& job_id, const std::string& lease_id,
                        const std::string& report_json);
  absl::Status Fail(const std::string& job_id, const std::string& lease_id,
                    const std::string& error);
  /// Requeues (or fails, past max_attempts) running jobs whose lease expired; returns
  /// how many expired.
  absl::StatusOr<int> ExpireLeases();
  /// Fails running jobs past their wall-time limit ("time limit of N s exceeded"); their
  /// workers stop at the next heartbeat. Returns how many.
  absl::StatusOr<int> EnforceTimeLimits();

  /// Called (under the store's lock; keep it short) whenever a job reaches a final state.
  void set_on_finished(std::function<void(const v1::Job&)> f) { on_finished_ = std::move(f); }

  /// Jobs per state, for metrics.
  absl::StatusOr<std::vector<std::pair<v1::JobState, int64_t>>> CountByState();
  struct TechniqueCount {
    v1::JobState state;
    std::string technique;
    int64_t count;
  };
  /// Jobs per state and technique (RecipeTechnique), for metrics.
  absl::StatusOr<std::vector<TechniqueCount>> CountByTechnique();

 private:
  JobStore(std::shared_ptr<StoreDb> store, Options options)
      : store_(std::move(store)), db_(store_->db()), mu_(store_->mu()), options_(options) {}
  /// Runs `body` in a write transaction, rolled back when it fails. Caller holds mu_.
  absl::Status Transaction(const std::function<absl::Status()>& body);
  absl::StatusOr<v1::Job> Load(const std::string& id);
  absl::Status AppendEvent(const std::string& id, v1::JobState state, const std::string& stage,
                           double progress, double eta, const std::string& message,
                           const v1::JobEvent* carried = nullptr);
  absl::Status CheckLease(const std::string& job_id, const std::string& lease_id);
  void NotifyFinished(const std::string& id);

  std::shared_ptr<StoreDb> store_;
  Database* db_;
  std::mutex& mu_;
  Options options_;
  std::condition_variable changed_;
  std::function<void(const v1::Job&)> on_finished_;
};

/// SUCCEEDED, FAILED and CANCELLED are final.
inline bool IsFinal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

}  // namespace qopt::server
