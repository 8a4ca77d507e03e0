// Content-addressed blob files: blobs/<first two hex>/<sha256>. Uploads are written to
// uploads/<sha256>.part, hashed (OpenSSL SHA-256), fsync'd and renamed into place only
// when size and hash match, so a partial blob is never visible. An interrupted upload
// resumes from the bytes its .part file holds.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "sha256.h"

namespace qopt::server {

class BlobStore;

/// One upload in progress; Commit() or drop it (the .part file stays for resuming).
class BlobUpload {
 public:
  ~BlobUpload();
  absl::Status Write(const std::string& bytes);
  int64_t offset() const { return offset_; }
  /// Verifies size and sha256, then publishes the blob. InvalidArgument on mismatch
  /// (the partial data is discarded).
  absl::Status Commit();

 private:
  friend class BlobStore;
  BlobUpload() = default;
  std::string sha256_, part_path_, final_path_;
  int64_t size_ = 0, offset_ = 0;
  int fd_ = -1;
  std::unique_ptr<Sha256> hasher_;
};

class BlobStore {
 public:
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const std::string& root);

  bool Exists(const std::string& sha256) const;
  std::string Path(const std::string& sha256) const;
  /// Bytes of an interrupted upload on disk (0 when none).
  int64_t PartialSize(const std::string& sha256) const;
  /// Starts (offset 0) or resumes (offset = PartialSize) an upload of `size` bytes.
  absl::StatusOr<std::unique_ptr<BlobUpload>> Begin(const std::string& sha256, int64_t size,
                                                    int64_t offset);
  /// Stores bytes computed here (artifacts from workers go through Begin too).
  int64_t Size(const std::string& sha256) const;

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace qopt::server
