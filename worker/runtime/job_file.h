// A file the job's sandboxed process wrote (an artifact, a checkpoint), read by the worker
// to send it to the server. The process runs untrusted model code, so the file is opened
// without following a link and must be a plain file with no other name: a link to a file
// the process could not read itself (the worker's token, another job's data) is refused.
// It is hashed and sent from the same descriptor; should the process rewrite it meanwhile,
// the server sees other bytes than the hash says and refuses them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sha256.h"

namespace qopt::worker {

class JobFile {
 public:
  /// NotFound when `path` cannot be opened; FailedPrecondition, naming `what`, when it is a
  /// link, not a plain file, or has another name.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<JobFile>> Open(const std::string& path,
                                                                     absl::string_view what);
  ~JobFile();
  JobFile(const JobFile&) = delete;
  JobFile& operator=(const JobFile&) = delete;

  /// Size and sha256 of the whole file, read once. Cancelled when `stop` (if given) turns
  /// true meanwhile.
  [[nodiscard]] absl::StatusOr<FileDigest> Digest(const std::atomic<bool>* stop = nullptr);
  /// Hands the first `size` bytes to `send` in chunks of at most 1 MiB, in order, until
  /// `send` returns false or the file ends early.
  void SendChunks(int64_t size, const std::function<bool(absl::string_view)>& send);

 private:
  JobFile(int fd, std::string what) : fd_(fd), what_(std::move(what)), buf_(1 << 20, '\0') {}
  /// Reads from `offset` into buf_; what pread returned.
  int64_t ReadAt(int64_t offset);

  int fd_;
  std::string what_;
  std::string buf_;
};

}  // namespace qopt::worker
