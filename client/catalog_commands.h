// Subcommands for named models and datasets, storage usage, and deleting finished jobs.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "connection.h"

namespace qopt::cli {

enum class RecordKind { kModel, kDataset };

struct RecordArgs {
  std::string name;
  /// A local file (uploaded first) or the sha256 of an uploaded blob.
  std::string file;
  /// Datasets only: labels file or sha256, and the data format.
  std::string labels;
  std::string format;
  std::string description;
  bool replace = false;
};

[[nodiscard]] absl::StatusOr<int> RunCreateRecord(Connection& connection, RecordKind kind,
                                                  const RecordArgs& args);
[[nodiscard]] absl::StatusOr<int> RunGetRecord(Connection& connection, RecordKind kind,
                                               const std::string& name);
[[nodiscard]] absl::StatusOr<int> RunListRecords(Connection& connection, RecordKind kind);
[[nodiscard]] absl::StatusOr<int> RunDeleteRecord(Connection& connection, RecordKind kind,
                                                  const std::string& name);
[[nodiscard]] absl::StatusOr<int> RunUsage(Connection& connection);
[[nodiscard]] absl::StatusOr<int> RunDeleteJob(Connection& connection, const std::string& job_id);

}  // namespace qopt::cli
