#include "errors.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/cord.h"

namespace qopt::cli {
namespace {

// Marks usage errors without inventing a status code: the code stays meaningful
// (INVALID_ARGUMENT, NOT_FOUND) while the payload decides the exit code.
constexpr absl::string_view kUsagePayload = "type.qopt.dev/usage-error";

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

int ReportError(const absl::Status& status) {
  // Server messages may span lines; the contract is one line per error.
  std::string message(status.message());
  std::replace(message.begin(), message.end(), '\n', ' ');
  if (IsUsageError(status)) {
    std::fprintf(stderr, "error: %s\n", message.c_str());
    return kExitUsage;
  }
  std::fprintf(stderr, "error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               message.c_str());
  return kExitRpcError;
}

}  // namespace qopt::cli
