// The run's output folder, written all or nothing: files go into a staging folder beside
// it and move in only when every step succeeded.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt {

class Staging {
 public:
  /// InvalidArgument when `out_dir` is empty, is a file, or its staging folder cannot be made.
  static absl::StatusOr<Staging> Create(const std::string& out_dir);
  Staging(Staging&& o) noexcept;
  Staging& operator=(Staging&&) = delete;
  ~Staging();

  /// Where a file named `name` is written before Commit.
  std::string Path(const std::string& name) const;
  /// Moves `names` from the staging folder into the output folder.
  absl::Status Commit(const std::vector<std::string>& names);

 private:
  Staging(std::filesystem::path out, std::filesystem::path dir);
  std::filesystem::path out_, dir_;
};

/// Writes `text` to `path`; Internal when it cannot.
absl::Status WriteText(const std::string& path, const std::string& text);

}  // namespace qopt
