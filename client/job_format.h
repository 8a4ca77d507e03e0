// How jobs and events look on the terminal (text) and to scripts (JSON).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/statusor.h"
#include "qopt/v1/service.pb.h"

namespace qopt::cli {

/// "RUNNING", "SUCCEEDED", ...
std::string StateName(v1::JobState state);
/// SUCCEEDED, FAILED or CANCELLED: nothing more will happen to the job.
bool IsFinished(v1::JobState state);

/// "12s", "2m05s", "1h02m".
std::string FormatDuration(double seconds);

/// One line: "job-1 RUNNING calibrate 42% (eta 3s)".
std::string JobSummary(const v1::Job& job);
/// The summary, then the error of a failed job and one line per artifact.
std::string JobDetails(const v1::Job& job);
/// "2025-12-03 14:05" in the local time zone; "-" for 0.
std::string FormatLocalTime(int64_t unix_ms);
/// How long the job ran: from its latest lease to its end, or to `now_unix_ms` while it
/// runs; "-" when it never ran.
std::string JobDuration(const v1::Job& job, int64_t now_unix_ms);
/// Top-1 in percent from the job's metrics, FP32 then quantized: "92.2 → 92.1"; only the
/// quantized figure when the FP32 one is missing; "-" without either.
std::string TopOne(const v1::Job& job);
/// The first line of a (possibly multi-line) text.
std::string FirstLine(const std::string& text);

/// `qopt list`: a header, then one aligned row per job: id, state, created, duration,
/// name, technique, top-1 and, last, the error's first line of a FAILED job or the stage
/// and progress of a queued or running one.
std::string JobTable(const std::vector<v1::Job>& jobs, int64_t now_unix_ms);

/// A running job's event message for a log, led by its stage ("calibrate: batch 6/8")
/// unless it starts with the stage or a label of its own ("sandbox: ...", "evaluate: ...").
/// Other events' messages as they are.
std::string EventLine(const v1::JobEvent& event);

/// "[#########-----------]  45% calibrate  eta 12s", for a live line on a terminal.
std::string ProgressBar(const v1::JobEvent& event);

/// Protobuf's JSON mapping with proto field names, as recipes are written. Fields at their
/// default are left out, as in recipes: a recipe's 0 means "the default", not zero.
[[nodiscard]] absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message,
                                                 bool pretty);

}  // namespace qopt::cli
