// What each tenant owns: its blobs (uploads), and named model / dataset records over them.
// Storage accounting follows ownership: a tenant's usage is the size of every distinct blob
// it uploaded plus its jobs' artifacts and checkpoints. Deleting a record or a job releases the blobs that
// nothing else of the tenant refers to; a blob no tenant, job or artifact refers to is
// removed from disk. Shares the server's database (and its lock) with the job store.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qopt/v1/service.pb.h"
#include "store/blob_store.h"
#include "store/store_db.h"

namespace qopt::server {

enum class RecordKind { kModel, kDataset };

class Catalog {
 public:
  struct Options {
    int64_t quota_bytes = 0;  // per tenant; 0 = unlimited
  };
  Catalog(std::shared_ptr<StoreDb> store, BlobStore* blobs, Options options)
      : store_(std::move(store)), blobs_(blobs), options_(options) {}

  int64_t quota_bytes() const { return options_.quota_bytes; }
  /// Bytes the tenant holds (distinct uploaded blobs, artifacts and its jobs' checkpoints,
  /// and the .part files of its interrupted uploads).
  absl::StatusOr<int64_t> UsedBytes(const std::string& tenant);
  /// ResourceExhausted when `adding` more bytes would pass the tenant's quota. A running
  /// upload passes the bytes it has still to send.
  absl::Status CheckQuota(const std::string& tenant, int64_t adding);
  absl::StatusOr<bool> Owns(const std::string& tenant, const std::string& sha256);

  /// Publishes a sealed upload and records the tenant as an owner, checking the quota
  /// once more (concurrent uploads); the upload is discarded when it does not fit.
  absl::Status PublishUpload(const std::string& tenant, BlobUpload& upload, const std::string& sha256);

  /// Creates (or, with `replace`, replaces) a record. A record is a v1::Dataset; models
  /// use its name, sha256, size, description and created_unix_ms only.
  absl::StatusOr<v1::Dataset> PutRecord(const std::string& tenant, RecordKind kind,
                                        const v1::Dataset& record, bool replace);
  absl::StatusOr<v1::Dataset> GetRecord(const std::string& tenant, RecordKind kind,
                                        const std::string& name);
  /// Records by name; page_token is the last name of the previous page.
  absl::StatusOr<std::pair<std::vector<v1::Dataset>, std::string>> ListRecords(
      const std::string& tenant, RecordKind kind, int page_size, const std::string& page_token);
  absl::Status DeleteRecord(const std::string& tenant, RecordKind kind, const std::string& name);

  /// Turns model.name / *_data.name into the records' blobs (pinning them into the job)
  /// and checks that every blob the recipe names belongs to the tenant.
  absl::Status ResolveRecipe(const std::string& tenant, v1::Recipe* recipe);

  /// Releases the tenant's ownership of those blobs that no record, job or artifact of the
  /// tenant refers to any more, and deletes blob files nothing refers to.
  absl::Status Release(const std::string& tenant, const std::vector<std::string>& sha256s);

  /// Deletes the files of those blobs nothing refers to any more (e.g. a job's checkpoint
  /// that a newer one replaced).
  absl::Status RemoveUnreferenced(const std::vector<std::string>& sha256s);

  struct Collected {
    int64_t parts = 0, part_bytes = 0;  // expired .part files
    int64_t blobs = 0, blob_bytes = 0;  // blob files nothing refers to
  };
  /// Garbage collection, at startup and periodically: removes .part files untouched for
  /// `part_max_age_ms`, and blob files no tenant, job input, artifact or checkpoint refers
  /// to (e.g. left by a crash, by a worker whose lease ended after uploading, or the
  /// checkpoint of a job that ended).
  absl::StatusOr<Collected> CollectGarbage(int64_t part_max_age_ms);

 private:
  absl::StatusOr<bool> OwnsLocked(const std::string& tenant, const std::string& sha256);
  absl::StatusOr<int64_t> UsedBytesLocked(const std::string& tenant);
  /// True while any tenant, job input, artifact or job checkpoint refers to the blob.
  absl::StatusOr<bool> ReferencedLocked(const std::string& sha256);
  absl::StatusOr<std::vector<std::string>> ReleaseLocked(const std::string& tenant,
                                                         const std::vector<std::string>& sha256s);
  void RemoveFiles(const std::vector<std::string>& sha256s);

  std::shared_ptr<StoreDb> store_;
  BlobStore* blobs_;
  Options options_;
};

/// The key naming a tenant's uploads on disk (uploads/<sha256>.<key>.part): 16 hex
/// digits of the tenant's hash, so tenant names never reach a file name.
std::string UploaderKey(const std::string& tenant);

/// Record names: 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit.
absl::Status CheckRecordName(const std::string& name);

}  // namespace qopt::server
