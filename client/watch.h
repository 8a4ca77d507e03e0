// Following a job's event stream until the job finishes.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "connection.h"
#include "qopt/v1/service.pb.h"

namespace qopt::cli {

/// Streams the job's events from the start and prints them: JSON lines with --output
/// json; otherwise each event's message on stdout, plus a live progress line on stderr
/// when stderr is a terminal. A broken stream (UNAVAILABLE) is reopened after the last
/// event seen, with backoff, a few times. Returns the job's final state (SUCCEEDED,
/// FAILED or CANCELLED).
[[nodiscard]] absl::StatusOr<v1::JobState> WatchJob(Connection& connection, const std::string& id);

/// Exit code for a finished job: 0 SUCCEEDED, 3 FAILED, 4 CANCELLED.
int ExitCodeForState(v1::JobState state);

}  // namespace qopt::cli
