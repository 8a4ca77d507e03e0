// Writing a received file so that it is whole and on disk before anyone sees it, at the
// speed it arrives. ReceivedFile writes the bytes on the caller's thread while one helper
// thread hashes them and another makes them durable as they accumulate; DurableFileWriter
// adds the PATH.partial / rename protocol. Used by the server's uploads, the CLI's
// downloads and the service benchmark.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sha256.h"

namespace qopt {

/// The bytes of a stream being written to a file and hashed.
/// - Append() writes on the caller's thread; PipelinedSha256 hashes beside it.
/// - Every 32 MiB a thread of its own calls fdatasync, so the final Sync() finds almost
///   nothing left. On the 2-core VMs' disk the device flush is what fsync waits for: a
///   512 MiB file took 0.24 s to fsync after arriving over 0.6 s even with write-back
///   started every 8 MiB (sync_file_range), 0.02 s with these syncs.
/// A failed background sync fails Sync(): Linux reports a write-back error to one fsync
/// per open file only.
class ReceivedFile {
 public:
  /// Takes `fd`, open for writing at its end, where `offset` bytes already are; they are
  /// not hashed (see Rehash).
  ReceivedFile(int fd, int64_t offset);
  /// Closes the file if Sync() did not.
  ~ReceivedFile();
  ReceivedFile(const ReceivedFile&) = delete;
  ReceivedFile& operator=(const ReceivedFile&) = delete;

  /// Writes `bytes` at the end. errno's text when the write fails.
  [[nodiscard]] absl::Status Append(std::string bytes);
  /// Feeds bytes that are already in the file (a resumed upload's) to the hash only.
  void Rehash(std::string bytes) { hash_.Update(std::move(bytes)); }
  /// Bytes in the file.
  int64_t size() const { return written_; }
  /// Waits for the hash of everything appended; lowercase hex; call once.
  std::string HexDigest() { return hash_.HexDigest(); }
  /// Makes the file durable (fsync) and closes it. errno's text on failure, including a
  /// failure of a background sync.
  [[nodiscard]] absl::Status Sync();

 private:
  void SyncBehind();
  void StopSyncing();

  int fd_;
  int64_t written_;        // changed by Append under mu_, read there by the syncing thread
  PipelinedSha256 hash_;
  std::mutex mu_;
  std::condition_variable changed_;
  int64_t synced_;         // bytes a background fdatasync has covered
  int sync_errno_ = 0;     // the first background fdatasync failure
  bool stop_ = false;
  std::thread syncer_;     // started at the first 32 MiB
};

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

  /// Writes and hashes `bytes`. ResourceExhausted when the disk refuses them.
  [[nodiscard]] absl::Status Append(std::string bytes);
  /// The size and sha256 of everything appended; call once, before Commit.
  FileDigest Digest();
  /// fsync, rename to the final path, fsync its directory.
  [[nodiscard]] absl::Status Commit();

  const std::string& partial_path() const { return partial_; }

 private:
  DurableFileWriter(std::string path, int fd);

  std::string path_, partial_;
  ReceivedFile file_;
  bool committed_ = false;
};

}  // namespace qopt
