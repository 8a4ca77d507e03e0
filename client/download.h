// Downloading a job's artifact with its integrity checked.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "connection.h"
#include "qopt/v1/service.pb.h"

namespace qopt::cli {

/// Streams artifact `name` of job `job_id` into `path`. The bytes go to `path`.partial
/// first and are renamed only after their sha256 and size match the job's artifact entry,
/// so `path` never holds a truncated or corrupt file. Returns that entry.
[[nodiscard]] absl::StatusOr<v1::Artifact> DownloadArtifact(Connection& connection,
                                                            const std::string& job_id,
                                                            const std::string& name,
                                                            const std::string& path);

struct DownloadedArtifact {
  v1::Artifact artifact;
  std::string path;
};

/// Downloads every artifact of job `job_id` into folder `dir` (made if missing), each as
/// DownloadArtifact does: verified, and written under its own name only once complete.
/// FailedPrecondition while the job has not finished, or when it has no artifacts. On an
/// error the artifacts downloaded before it stay, complete; none is half written.
[[nodiscard]] absl::StatusOr<std::vector<DownloadedArtifact>> DownloadAllArtifacts(
    Connection& connection, const std::string& job_id, const std::string& dir);

}  // namespace qopt::cli
