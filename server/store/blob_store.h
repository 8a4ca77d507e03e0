// Content-addressed blob files: blobs/<first two hex>/<sha256>. Uploads are written to
// uploads/<sha256>.<owner>.part (one per uploader, so two tenants never share a partial
// file), hashed (OpenSSL SHA-256) while streaming, fsync'd, and renamed into place only
// when size and hash match, so a partial blob is never visible. An interrupted upload
// resumes from the bytes its .part file holds.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "durable_file.h"

namespace qopt::server {

class BlobStore;

/// One upload in progress; Commit() (or Seal() then Publish()) or drop it (the .part
/// file stays for resuming, until garbage collection removes it as expired).
class BlobUpload {
 public:
  ~BlobUpload();
  absl::Status Write(std::string bytes);
  int64_t offset() const { return file_->size(); }
  int64_t size() const { return size_; }
  /// Verifies size and sha256 and makes the bytes durable (fsync). InvalidArgument on
  /// mismatch (the partial data is discarded).
  absl::Status Seal();
  /// Renames a sealed upload into place (fast; callers may hold a lock around it).
  absl::Status Publish();
  /// Removes the upload's .part file (sealed or not): it will not be published or resumed.
  void Discard();
  absl::Status Commit();

 private:
  friend class BlobStore;
  BlobUpload() = default;
  std::string sha256_, part_path_, final_path_;
  int64_t size_ = 0;
  bool sealed_ = false;
  std::unique_ptr<ReceivedFile> file_;
};

class BlobStore {
 public:
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const std::string& root);

  bool Exists(const std::string& sha256) const;
  std::string Path(const std::string& sha256) const;
  /// Bytes of `owner`'s interrupted upload on disk (0 when none). `owner` is a key of
  /// [A-Za-z0-9_-] naming the uploader (a tenant's key, a job id).
  int64_t PartialSize(const std::string& sha256, const std::string& owner) const;
  /// Starts (offset 0) or resumes (offset = PartialSize) an upload of `size` bytes.
  absl::StatusOr<std::unique_ptr<BlobUpload>> Begin(const std::string& sha256, int64_t size,
                                                    int64_t offset, const std::string& owner);
  int64_t Size(const std::string& sha256) const;
  /// Deletes a stored blob (the catalog decides when nothing refers to it).
  absl::Status Remove(const std::string& sha256);

  /// Bytes on disk in every interrupted upload of `owner` (they count against its quota).
  int64_t PartialBytes(const std::string& owner) const;
  struct Removed {
    int64_t files = 0;
    int64_t bytes = 0;
  };
  /// Deletes .part files untouched for `max_age_ms` (an upload writing to one keeps it
  /// fresh; a stalled one is cancelled long before).
  Removed RemoveExpiredParts(int64_t max_age_ms);
  /// The sha256 of every stored blob (for garbage collection).
  std::vector<std::string> ListBlobs() const;

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  std::string PartPath(const std::string& sha256, const std::string& owner) const;
  std::string root_;
};

}  // namespace qopt::server
