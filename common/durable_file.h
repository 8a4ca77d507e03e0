// Writing a received file so that it is whole and on disk before anyone sees it: bytes go
// to PATH.partial while their sha256 is computed, write-back starts as they arrive, and
// Commit() fsyncs, renames over PATH and fsyncs the directory. Shared by the CLI's
// downloads and the service benchmark.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sha256.h"

namespace qopt {

/// Hashes `bytes` into `hash` and writes them to `fd`, in slices small enough to stay in
/// the CPU cache between the two passes (one pass over a whole 1 MiB chunk each measured
/// 2-3x slower), then starts write-back of what is pending once 8 MiB are, so the disk
/// works while the rest streams in and a final fsync finds little left. `written` and
/// `flushed` (bytes handed to the disk) are the file's offsets, advanced here. Returns
/// errno's text when a write fails.
[[nodiscard]] absl::Status HashAndWrite(int fd, absl::string_view bytes, Sha256& hash, int64_t& written,
                                        int64_t& flushed);

/// Makes a rename into `path`'s folder durable: fsyncs the folder (best effort, as some
/// file systems refuse).
void SyncFolderOf(const std::string& path);

class DurableFileWriter {
 public:
  /// Creates (or truncates) `path`.partial. InvalidArgument when it cannot be created.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<DurableFileWriter>> Create(const std::string& path);
  /// Removes the partial file unless Commit() succeeded.
  ~DurableFileWriter();
  DurableFileWriter(const DurableFileWriter&) = delete;
  DurableFileWriter& operator=(const DurableFileWriter&) = delete;

  /// Hashes and writes `bytes`. ResourceExhausted when the disk refuses them.
  [[nodiscard]] absl::Status Append(absl::string_view bytes);
  /// The size and sha256 of everything appended; call once, before Commit.
  FileDigest Digest();
  /// fsync, rename to the final path, fsync its directory.
  [[nodiscard]] absl::Status Commit();

  const std::string& partial_path() const { return partial_; }

 private:
  DurableFileWriter(std::string path, int fd);

  std::string path_, partial_;
  int fd_;
  Sha256 hash_;
  int64_t written_ = 0, flushed_ = 0;
  bool committed_ = false;
};

}  // namespace qopt
