#include "store/catalog.h"

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "recipe_files.h"
#include "status.h"

namespace qopt::server {
namespace {

const char* KindName(RecordKind kind) { return kind == RecordKind::kModel ? "model" : "dataset"; }

constexpr char kRecordColumns[] =
    "name, sha256, size, labels_sha256, format, description, created_ms";

v1::Dataset ReadRecord(const Statement& st) {
  v1::Dataset r;
  r.set_name(st.Text(0));
  r.set_sha256(st.Text(1));
  r.set_size(st.Int(2));
  r.set_labels_sha256(st.Text(3));
  r.set_format(st.Text(4));
  r.set_description(st.Text(5));
  r.set_created_unix_ms(st.Int(6));
  return r;
}

}  // namespace

std::string UploaderKey(const std::string& tenant) {
  Sha256 hash;
  hash.Update(tenant);
  return hash.HexDigest().substr(0, 16);
}

absl::Status CheckRecordName(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 128 && std::isalnum(static_cast<unsigned char>(name[0])) &&
                  name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789._-") == std::string::npos;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "bad name '", name, "': use 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit"));
}

absl::StatusOr<int64_t> Catalog::UsedBytesLocked(const std::string& tenant) {
  ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(
      "SELECT COALESCE(SUM(size), 0) FROM ("
      "  SELECT sha256, size FROM tenant_blobs WHERE tenant = ?1"
      "  UNION SELECT a.sha256, a.size FROM artifacts a JOIN jobs j ON j.id = a.job_id"
      "  WHERE j.tenant = ?1"
      "  UNION SELECT checkpoint_sha256, checkpoint_size FROM jobs WHERE tenant = ?1 AND checkpoint_sha256 != '')"));
  st.Bind(1, tenant);
  ASSIGN_OR_RETURN(bool row, st.Step());
  // Partial uploads hold disk too: without them, unfinished uploads would be free storage.
  return (row ? st.Int(0) : 0) + blobs_->PartialBytes(UploaderKey(tenant));
}

absl::StatusOr<int64_t> Catalog::UsedBytes(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(store_->mu());
  return UsedBytesLocked(tenant);
}

absl::Status Catalog::CheckQuota(const std::string& tenant, int64_t adding) {
  if (options_.quota_bytes <= 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(int64_t used, UsedBytes(tenant));
  if (used + adding <= options_.quota_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "storage quota exceeded: tenant '", tenant, "' holds ", used, " of ", options_.quota_bytes,
      " bytes and this needs ", adding, " more; delete jobs, models or datasets to make room"));
}

absl::StatusOr<bool> Catalog::OwnsLocked(const std::string& tenant, const std::string& sha256) {
  ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(
      "SELECT 1 FROM tenant_blobs WHERE tenant = ? AND sha256 = ? "
      "UNION SELECT 1 FROM artifacts a JOIN jobs j ON j.id = a.job_id "
      "WHERE j.tenant = ? AND a.sha256 = ? LIMIT 1"));
  st.Bind(1, tenant).Bind(2, sha256).Bind(3, tenant).Bind(4, sha256);
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row && blobs_->Exists(sha256);
}

absl::StatusOr<bool> Catalog::Owns(const std::string& tenant, const std::string& sha256) {
  std::lock_guard<std::mutex> lock(store_->mu());
  return OwnsLocked(tenant, sha256);
}

absl::Status Catalog::PublishUpload(const std::string& tenant, BlobUpload& upload,
                                    const std::string& sha256) {
  std::lock_guard<std::mutex> lock(store_->mu());
  if (options_.quota_bytes > 0) {
    // The sealed upload's .part file is still counted in `used`: publishing it adds nothing.
    ASSIGN_OR_RETURN(int64_t used, UsedBytesLocked(tenant));
    if (used > options_.quota_bytes) {
      upload.Discard();
      return absl::ResourceExhaustedError(absl::StrCat(
          "storage quota exceeded: tenant '", tenant, "' holds ", used - upload.size(), " of ",
          options_.quota_bytes, " bytes and the upload needs ", upload.size(), " more"));
    }
  }
  RETURN_IF_ERROR(upload.Publish());
  ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(
      "INSERT OR IGNORE INTO tenant_blobs (tenant, sha256, size, created_ms) VALUES (?, ?, ?, ?)"));
  st.Bind(1, tenant).Bind(2, sha256).Bind(3, upload.size()).Bind(4, NowUnixMs());
  return st.Run();
}

absl::StatusOr<v1::Dataset> Catalog::PutRecord(const std::string& tenant, RecordKind kind,
                                               const v1::Dataset& record, bool replace) {
  RETURN_IF_ERROR(CheckRecordName(record.name()));
  std::vector<std::string> released;
  v1::Dataset stored;
  {
    std::lock_guard<std::mutex> lock(store_->mu());
    for (const auto& [field, sha] : {std::pair<const char*, std::string>{"sha256", record.sha256()},
                                     {"labels_sha256", record.labels_sha256()}}) {
      if (sha.empty() && std::string(field) == "labels_sha256") continue;
      if (!IsSha256Hex(sha)) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, " must be the sha256 of an uploaded blob, got '", sha, "'"));
      }
      ASSIGN_OR_RETURN(bool owned, OwnsLocked(tenant, sha));
      if (!owned) {
        return absl::FailedPreconditionError(absl::StrCat(field, ": blob ", sha, " has not been uploaded"));
      }
    }
    ASSIGN_OR_RETURN(Statement old, store_->db()->Prepare(absl::StrCat(
        "SELECT ", kRecordColumns, " FROM records WHERE tenant = ? AND kind = ? AND name = ?")));
    old.Bind(1, tenant).Bind(2, std::string(KindName(kind))).Bind(3, record.name());
    ASSIGN_OR_RETURN(bool exists, old.Step());
    if (exists) {
      v1::Dataset previous = ReadRecord(old);
      const bool same = previous.sha256() == record.sha256() &&
                        previous.labels_sha256() == record.labels_sha256() &&
                        previous.format() == record.format() &&
                        previous.description() == record.description();
      if (same) return previous;
      if (!replace) {
        return absl::AlreadyExistsError(absl::StrCat(
            KindName(kind), " '", record.name(), "' exists with other contents; set replace to overwrite it"));
      }
      released = {previous.sha256(), previous.labels_sha256()};
    }
    ASSIGN_OR_RETURN(Statement size, store_->db()->Prepare(
        "SELECT size FROM tenant_blobs WHERE sha256 = ? LIMIT 1"));
    size.Bind(1, record.sha256());
    ASSIGN_OR_RETURN(bool sized, size.Step());
    stored = record;
    stored.set_size(sized ? size.Int(0) : blobs_->Size(record.sha256()));
    stored.set_created_unix_ms(NowUnixMs());
    RETURN_IF_ERROR(store_->Transaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(
          "INSERT OR REPLACE INTO records (tenant, kind, name, sha256, size, labels_sha256, format, "
          "description, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
      st.Bind(1, tenant).Bind(2, std::string(KindName(kind))).Bind(3, stored.name())
          .Bind(4, stored.sha256()).Bind(5, stored.size()).Bind(6, stored.labels_sha256())
          .Bind(7, stored.format()).Bind(8, stored.description()).Bind(9, stored.created_unix_ms());
      return st.Run();
    }));
    if (!released.empty()) {
      ASSIGN_OR_RETURN(std::vector<std::string> gone, ReleaseLocked(tenant, released));
      RemoveFiles(gone);
    }
  }
  return stored;
}

absl::StatusOr<v1::Dataset> Catalog::GetRecord(const std::string& tenant, RecordKind kind,
                                               const std::string& name) {
  std::lock_guard<std::mutex> lock(store_->mu());
  ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(absl::StrCat(
      "SELECT ", kRecordColumns, " FROM records WHERE tenant = ? AND kind = ? AND name = ?")));
  st.Bind(1, tenant).Bind(2, std::string(KindName(kind))).Bind(3, name);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat(KindName(kind), " '", name, "' not found"));
  return ReadRecord(st);
}

absl::StatusOr<std::pair<std::vector<v1::Dataset>, std::string>> Catalog::ListRecords(
    const std::string& tenant, RecordKind kind, int page_size, const std::string& page_token) {
  std::lock_guard<std::mutex> lock(store_->mu());
  const int64_t limit = page_size > 0 ? std::min(page_size, 1000) : 100;
  ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(absl::StrCat(
      "SELECT ", kRecordColumns, " FROM records WHERE tenant = ? AND kind = ? AND name > ? "
      "ORDER BY name LIMIT ?")));
  st.Bind(1, tenant).Bind(2, std::string(KindName(kind))).Bind(3, page_token).Bind(4, limit + 1);
  std::pair<std::vector<v1::Dataset>, std::string> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    if (static_cast<int64_t>(out.first.size()) == limit) {
      out.second = out.first.back().name();
      break;
    }
    out.first.push_back(ReadRecord(st));
  }
  return out;
}

absl::Status Catalog::DeleteRecord(const std::string& tenant, RecordKind kind, const std::string& name) {
  std::lock_guard<std::mutex> lock(store_->mu());
  ASSIGN_OR_RETURN(Statement st, store_->db()->Prepare(
      "DELETE FROM records WHERE tenant = ? AND kind = ? AND name = ? RETURNING sha256, labels_sha256"));
  st.Bind(1, tenant).Bind(2, std::string(KindName(kind))).Bind(3, name);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat(KindName(kind), " '", name, "' not found"));
  const std::vector<std::string> shas = {st.Text(0), st.Text(1)};
  RETURN_IF_ERROR(st.Run());
  ASSIGN_OR_RETURN(std::vector<std::string> gone, ReleaseLocked(tenant, shas));
  RemoveFiles(gone);
  return absl::OkStatus();
}

absl::Status Catalog::ResolveRecipe(const std::string& tenant, v1::Recipe* recipe) {
  if (!recipe->model().name().empty()) {
    if (!recipe->model().path().empty()) {
      return absl::InvalidArgumentError("set model.name or model.path, not both");
    }
    ASSIGN_OR_RETURN(v1::Dataset model, GetRecord(tenant, RecordKind::kModel, recipe->model().name()));
    recipe->mutable_model()->set_path(model.sha256());
  }
  // Every data reference a recipe has: the recipe's and its steps' (qat.data,
  // fine_tune.data, spatial_svd.ratios.data).
  for (const auto& [label, ref] : RecipeDataRefs(*recipe)) {
    v1::DataRef* data = const_cast<v1::DataRef*>(ref);  // points into *recipe, which is ours to change
    if (data->name().empty()) continue;
    if (!data->path().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("set ", label, ".name or ", label, ".path, not both"));
    }
    ASSIGN_OR_RETURN(v1::Dataset set, GetRecord(tenant, RecordKind::kDataset, data->name()));
    data->set_path(set.sha256());
    if (data->labels_path().empty()) data->set_labels_path(set.labels_sha256());
    if (data->format().empty()) data->set_format(set.format());
  }
  if (recipe->model().path().empty()) {
    return absl::InvalidArgumentError("recipe names no model (model.name, or model.path = blob sha256)");
  }
  std::lock_guard<std::mutex> lock(store_->mu());
  for (const auto& [field, value] : RecipeFiles(*recipe)) {
    if (!IsSha256Hex(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " must be the sha256 of an uploaded blob, got '", value, "'"));
    }
    ASSIGN_OR_RETURN(bool owned, OwnsLocked(tenant, value));
    if (!owned) {
      return absl::FailedPreconditionError(absl::StrCat(field, ": blob ", value, " has not been uploaded"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Catalog::ReferencedLocked(const std::string& sha256) {
  ASSIGN_OR_RETURN(Statement any, store_->db()->Prepare(
      "SELECT 1 FROM tenant_blobs WHERE sha256 = ?1 UNION SELECT 1 FROM job_inputs WHERE sha256 = ?1 "
      "UNION SELECT 1 FROM artifacts WHERE sha256 = ?1 UNION SELECT 1 FROM jobs WHERE checkpoint_sha256 = ?1 "
      "LIMIT 1"));
  any.Bind(1, sha256);
  return any.Step();
}

absl::StatusOr<std::vector<std::string>> Catalog::ReleaseLocked(const std::string& tenant,
                                                                const std::vector<std::string>& sha256s) {
  std::vector<std::string> unreferenced;
  for (const std::string& sha : sha256s) {
    if (sha.empty()) continue;
    ASSIGN_OR_RETURN(Statement used, store_->db()->Prepare(
        "SELECT 1 FROM records WHERE tenant = ? AND (sha256 = ? OR labels_sha256 = ?) "
        "UNION SELECT 1 FROM job_inputs i JOIN jobs j ON j.id = i.job_id WHERE j.tenant = ? AND i.sha256 = ? "
        "UNION SELECT 1 FROM artifacts a JOIN jobs j ON j.id = a.job_id WHERE j.tenant = ? AND a.sha256 = ? "
        "LIMIT 1"));
    used.Bind(1, tenant).Bind(2, sha).Bind(3, sha).Bind(4, tenant).Bind(5, sha).Bind(6, tenant).Bind(7, sha);
    ASSIGN_OR_RETURN(bool in_use, used.Step());
    if (in_use) continue;
    ASSIGN_OR_RETURN(Statement drop, store_->db()->Prepare(
        "DELETE FROM tenant_blobs WHERE tenant = ? AND sha256 = ?"));
    drop.Bind(1, tenant).Bind(2, sha);
    RETURN_IF_ERROR(drop.Run());
    ASSIGN_OR_RETURN(bool referenced, ReferencedLocked(sha));
    if (!referenced) unreferenced.push_back(sha);
  }
  return unreferenced;
}

absl::Status Catalog::Release(const std::string& tenant, const std::vector<std::string>& sha256s) {
  std::lock_guard<std::mutex> lock(store_->mu());
  ASSIGN_OR_RETURN(std::vector<std::string> gone, ReleaseLocked(tenant, sha256s));
  RemoveFiles(gone);
  return absl::OkStatus();
}

absl::Status Catalog::RemoveUnreferenced(const std::vector<std::string>& sha256s) {
  std::lock_guard<std::mutex> lock(store_->mu());
  std::vector<std::string> gone;
  for (const std::string& sha : sha256s) {
    if (sha.empty()) continue;
    ASSIGN_OR_RETURN(bool referenced, ReferencedLocked(sha));
    if (!referenced) gone.push_back(sha);
  }
  RemoveFiles(gone);
  return absl::OkStatus();
}

absl::StatusOr<Catalog::Collected> Catalog::CollectGarbage(int64_t part_max_age_ms) {
  Collected collected;
  const BlobStore::Removed parts = blobs_->RemoveExpiredParts(part_max_age_ms);
  collected.parts = parts.files;
  collected.part_bytes = parts.bytes;
  for (const std::string& sha : blobs_->ListBlobs()) {
    // One blob at a time under the lock: both ways a blob is published (an upload, an
    // artifact) insert its referring row under the same lock, so none is caught between.
    std::lock_guard<std::mutex> lock(store_->mu());
    ASSIGN_OR_RETURN(bool referenced, ReferencedLocked(sha));
    if (referenced) continue;
    const int64_t size = blobs_->Size(sha);
    if (blobs_->Remove(sha).ok()) {
      ++collected.blobs;
      collected.blob_bytes += std::max<int64_t>(size, 0);
    }
  }
  return collected;
}

void Catalog::RemoveFiles(const std::vector<std::string>& sha256s) {
  // Under the lock, so an upload of the same bytes cannot be published in between.
  for (const std::string& sha : sha256s) blobs_->Remove(sha).IgnoreError();
}

}  // namespace qopt::server
