// The subcommands. Each prints its result on stdout (text or JSON, per the connection's
// options) and returns the process exit code, or an error for ReportError().
#pragma once

#include <string>
#include <vector>

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
struct ListArgs {
  /// JobState names (any case); empty = every state. The server filters by state.
  std::vector<std::string> states;
  /// Only jobs whose recipe name contains this, ignoring case (filtered here: the server
  /// keeps names inside recipes).
  std::string name;
  /// Jobs per request; 0 lets the server choose.
  int page_size = 100;
};

[[nodiscard]] absl::StatusOr<int> RunList(Connection& connection, const ListArgs& args);
[[nodiscard]] absl::StatusOr<int> RunWatch(Connection& connection, const std::string& job_id);
[[nodiscard]] absl::StatusOr<int> RunCancel(Connection& connection, const std::string& job_id);
/// `path` empty = ./NAME.
[[nodiscard]] absl::StatusOr<int> RunDownload(Connection& connection, const std::string& job_id,
                                              const std::string& name, const std::string& path);
/// Every artifact of a finished job into folder `dir` (made if missing; empty = ./JOB_ID).
[[nodiscard]] absl::StatusOr<int> RunDownloadAll(Connection& connection, const std::string& job_id,
                                                 const std::string& dir);
[[nodiscard]] absl::StatusOr<int> RunReport(Connection& connection, const std::string& job_id);

}  // namespace qopt::cli
