// How a failed command ends: which exit code and which one-line message on stderr.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace qopt::cli {

/// Exit codes of every subcommand. Watching ends with the job's fate.
enum ExitCode : int {
  kExitOk = 0,
  kExitRpcError = 1,
  kExitUsage = 2,
  kExitJobFailed = 3,
  kExitJobCancelled = 4,
};

/// An error in what the user gave us (a missing file, a bad recipe): exit code 2 rather
/// than 1, so scripts can tell "fix your input" from "the service said no".
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

/// Prints "error: CODE: message" (or "error: message" for usage errors) on one line and
/// returns the exit code for `status`.
int ReportError(const absl::Status& status);

}  // namespace qopt::cli
