// How jobs and events look on the terminal (text) and to scripts (JSON).
#pragma once

#include <string>

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
/// One aligned line per job for `qopt list`: id, state, stage/progress, recipe name.
std::string JobListLine(const v1::Job& job);

/// "[#########-----------]  45% calibrate  eta 12s", for a live line on a terminal.
std::string ProgressBar(const v1::JobEvent& event);

/// Protobuf's JSON mapping with proto field names, as recipes are written. Fields at their
/// default are left out, as in recipes: a recipe's 0 means "the default", not zero.
[[nodiscard]] absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message,
                                                 bool pretty);

}  // namespace qopt::cli
