// The subcommands. Each prints its result on stdout (text or JSON, per the connection's
// options) and returns the process exit code, or an error for ReportError().
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "connection.h"
#include "recipe_inputs.h"

namespace qopt::cli {

struct SubmitArgs {
  std::string recipe_path;
  RecipeOverrides overrides;
  int priority = 0;
  std::string request_id;
  bool watch = false;
};

[[nodiscard]] absl::StatusOr<int> RunUpload(Connection& connection, const std::string& file);
[[nodiscard]] absl::StatusOr<int> RunSubmit(Connection& connection, const SubmitArgs& args);
[[nodiscard]] absl::StatusOr<int> RunStatus(Connection& connection, const std::string& job_id);
/// `state` is a JobState name or empty for all; `page_size` 0 lets the server choose.
[[nodiscard]] absl::StatusOr<int> RunList(Connection& connection, const std::string& state,
                                          int page_size);
[[nodiscard]] absl::StatusOr<int> RunWatch(Connection& connection, const std::string& job_id);
[[nodiscard]] absl::StatusOr<int> RunCancel(Connection& connection, const std::string& job_id);
/// `path` empty = ./NAME.
[[nodiscard]] absl::StatusOr<int> RunDownload(Connection& connection, const std::string& job_id,
                                              const std::string& name, const std::string& path);
[[nodiscard]] absl::StatusOr<int> RunReport(Connection& connection, const std::string& job_id);

}  // namespace qopt::cli
