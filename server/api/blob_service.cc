#include <fstream>

#include "absl/strings/str_cat.h"
#include "api/services.h"

namespace qopt::server {

constexpr size_t kMaxChunk = 1 << 20;

// One of a tenant's upload streams, held for the life of the call: each holds a server
// thread and, once its header arrives, an open file, so a tenant may hold only a few.
class UploadSlot {
 public:
  UploadSlot(BlobServiceImpl* service, std::string tenant) : service_(service), tenant_(std::move(tenant)) {
    std::lock_guard<std::mutex> lock(service_->active_mu_);
    int& open = service_->open_per_tenant_[tenant_];
    if (open >= service_->limits_.max_uploads_per_tenant) {
      refusal_ = absl::StrCat("tenant '", tenant_, "' already has ", open,
                              " uploads open (the server's --max-uploads-per-tenant); retry when one ends");
    } else if (service_->open_total_ >= service_->limits_.max_uploads) {
      refusal_ = absl::StrCat("the server has ", service_->open_total_,
                              " uploads open (its --max-uploads); retry later");
    } else {
      ++open;
      ++service_->open_total_;
    }
  }
  ~UploadSlot() {
    std::lock_guard<std::mutex> lock(service_->active_mu_);
    auto it = service_->open_per_tenant_.find(tenant_);
    if (held()) {
      --it->second;
      --service_->open_total_;
    }
    if (it->second == 0) service_->open_per_tenant_.erase(it);
  }
  UploadSlot(const UploadSlot&) = delete;
  UploadSlot& operator=(const UploadSlot&) = delete;
  bool held() const { return refusal_.empty(); }
  /// Why the slot was refused (RESOURCE_EXHAUSTED).
  const std::string& refusal() const { return refusal_; }

 private:
  BlobServiceImpl* service_;
  std::string tenant_;
  std::string refusal_;
};

grpc::Status BlobServiceImpl::Upload(grpc::ServerContext* ctx,
                                     grpc::ServerReader<v1::UploadRequest>* reader,
                                     v1::UploadResponse* response) {
  Metrics::RpcTimer timer(metrics_, "Upload");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  UploadSlot upload_slot(this, tenant);
  if (!upload_slot.held()) return {grpc::StatusCode::RESOURCE_EXHAUSTED, upload_slot.refusal()};
  IdleWatchdog::Watch watch(watchdog_, ctx);
  const auto idled = [&] {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        absl::StrCat("upload idle for ", watchdog_->idle_timeout().count() / 1000.0,
                                     " s; resume it from GetUploadStatus"));
  };
  v1::UploadRequest msg;
  if (!reader->Read(&msg)) {
    if (watch.timed_out()) return idled();
    return {grpc::StatusCode::INVALID_ARGUMENT, "an upload starts with a header message"};
  }
  watch.Touch();
  if (!msg.has_header()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "an upload starts with a header message"};
  }
  const v1::UploadHeader header = msg.header();
  if (!IsSha256Hex(header.sha256())) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("'", header.sha256(), "' is not a sha256 (64 lowercase hex digits)")};
  }
  if (header.size() > limits_.max_upload_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("upload of ", header.size(), " bytes exceeds the limit of ",
                         limits_.max_upload_bytes)};
  }
  response->set_sha256(header.sha256());
  response->set_size(header.size());
  // Only the tenant's own blobs deduplicate: anyone else proves they hold the bytes by
  // sending them, so a hash alone never grants access to another tenant's data.
  auto owned = catalog_->Owns(tenant, header.sha256());
  if (!owned.ok()) return ToGrpc(owned.status());
  if (*owned) {
    response->set_deduplicated(true);
    return grpc::Status::OK;
  }
  const std::string owner = UploaderKey(tenant);
  // What is already on disk for this upload counts in the tenant's usage.
  if (absl::Status s = catalog_->CheckQuota(tenant, header.size() - blobs_->PartialSize(header.sha256(), owner));
      !s.ok()) {
    return ToGrpc(s);
  }
  const std::string slot = absl::StrCat(header.sha256(), ".", owner);
  {
    std::lock_guard<std::mutex> lock(active_mu_);
    if (!active_.insert(slot).second) {
      return {grpc::StatusCode::ABORTED,
              absl::StrCat("an upload of ", header.sha256(), " is already in progress; retry later")};
    }
  }
  struct Release {
    BlobServiceImpl* self;
    std::string slot;
    ~Release() {
      std::lock_guard<std::mutex> lock(self->active_mu_);
      self->active_.erase(slot);
    }
  } release{this, slot};
  auto upload = blobs_->Begin(header.sha256(), header.size(), header.offset(), owner);
  if (!upload.ok()) return ToGrpc(upload.status());
  while (reader->Read(&msg)) {
    watch.Touch();
    if (!msg.has_chunk()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "only the first upload message is a header"};
    }
    if (msg.chunk().size() > kMaxChunk) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "upload chunks must be at most 1 MiB"};
    }
    const int64_t bytes = static_cast<int64_t>(msg.chunk().size());
    if (absl::Status s = (*upload)->Write(std::move(*msg.mutable_chunk())); !s.ok()) return ToGrpc(s);
    metrics_->BytesIn(bytes);
  }
  if (watch.timed_out()) return idled();
  if (ctx->IsCancelled()) return {grpc::StatusCode::CANCELLED, "upload cancelled; resume it later"};
  if (absl::Status s = (*upload)->Seal(); !s.ok()) return ToGrpc(s);
  return ToGrpc(catalog_->PublishUpload(tenant, **upload, header.sha256()));
}

grpc::Status BlobServiceImpl::GetUploadStatus(grpc::ServerContext* ctx,
                                              const v1::GetUploadStatusRequest* request,
                                              v1::GetUploadStatusResponse* response) {
  Metrics::RpcTimer timer(metrics_, "GetUploadStatus");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  if (!IsSha256Hex(request->sha256())) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "sha256 must be 64 lowercase hex digits"};
  }
  auto owned = catalog_->Owns(tenant, request->sha256());
  if (!owned.ok()) return ToGrpc(owned.status());
  response->set_complete(*owned);
  response->set_committed_offset(*owned ? blobs_->Size(request->sha256())
                                        : blobs_->PartialSize(request->sha256(), UploaderKey(tenant)));
  return grpc::Status::OK;
}

grpc::Status BlobServiceImpl::GetUsage(grpc::ServerContext* ctx, const v1::GetUsageRequest*,
                                       v1::Usage* response) {
  Metrics::RpcTimer timer(metrics_, "GetUsage");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  auto used = catalog_->UsedBytes(tenant);
  if (!used.ok()) return ToGrpc(used.status());
  response->set_used_bytes(*used);
  response->set_quota_bytes(catalog_->quota_bytes());
  return grpc::Status::OK;
}

grpc::Status StreamBlob(const BlobStore& blobs, const std::string& sha256,
                        grpc::ServerWriter<v1::Chunk>* writer, Metrics* metrics) {
  if (!blobs.Exists(sha256)) return {grpc::StatusCode::NOT_FOUND, absl::StrCat("blob ", sha256, " not found")};
  std::ifstream in(blobs.Path(sha256), std::ios::binary);
  v1::Chunk chunk;
  // Read straight into the message: one copy of the bytes fewer.
  std::string* data = chunk.mutable_data();
  while (in) {
    data->resize(kMaxChunk);
    in.read(data->data(), static_cast<std::streamsize>(data->size()));
    const auto n = in.gcount();
    if (n <= 0) break;
    data->resize(static_cast<size_t>(n));
    if (!writer->Write(chunk)) return {grpc::StatusCode::CANCELLED, "reader went away"};
    metrics->BytesOut(n);
  }
  return grpc::Status::OK;
}

}  // namespace qopt::server
