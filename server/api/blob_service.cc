#include <fstream>

#include "absl/strings/str_cat.h"
#include "api/services.h"

namespace qopt::server {

constexpr size_t kMaxChunk = 1 << 20;

grpc::Status BlobServiceImpl::Upload(grpc::ServerContext* ctx,
                                     grpc::ServerReader<v1::UploadRequest>* reader,
                                     v1::UploadResponse* response) {
  Metrics::RpcTimer timer(metrics_, "Upload");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  v1::UploadRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "an upload starts with a header message"};
  }
  const v1::UploadHeader header = msg.header();
  if (header.size() > limits_.max_upload_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("upload of ", header.size(), " bytes exceeds the limit of ",
                         limits_.max_upload_bytes)};
  }
  response->set_sha256(header.sha256());
  response->set_size(header.size());
  if (blobs_->Exists(header.sha256())) {
    response->set_deduplicated(true);
    return grpc::Status::OK;
  }
  auto upload = blobs_->Begin(header.sha256(), header.size(), header.offset());
  if (!upload.ok()) return ToGrpc(upload.status());
  while (reader->Read(&msg)) {
    if (!msg.has_chunk() && msg.chunk().empty()) continue;
    if (msg.chunk().size() > kMaxChunk) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "upload chunks must be at most 1 MiB"};
    }
    if (absl::Status s = (*upload)->Write(msg.chunk()); !s.ok()) return ToGrpc(s);
    metrics_->BytesIn(static_cast<int64_t>(msg.chunk().size()));
  }
  if (ctx->IsCancelled()) return {grpc::StatusCode::CANCELLED, "upload cancelled; resume it later"};
  return ToGrpc((*upload)->Commit());
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
  response->set_complete(blobs_->Exists(request->sha256()));
  response->set_committed_offset(response->complete() ? blobs_->Size(request->sha256())
                                                      : blobs_->PartialSize(request->sha256()));
  return grpc::Status::OK;
}

grpc::Status StreamBlob(const BlobStore& blobs, const std::string& sha256,
                        grpc::ServerWriter<v1::Chunk>* writer, Metrics* metrics) {
  if (!blobs.Exists(sha256)) return {grpc::StatusCode::NOT_FOUND, absl::StrCat("blob ", sha256, " not found")};
  std::ifstream in(blobs.Path(sha256), std::ios::binary);
  std::string buf(kMaxChunk, '\0');
  v1::Chunk chunk;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n <= 0) break;
    chunk.set_data(buf.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) return {grpc::StatusCode::CANCELLED, "reader went away"};
    metrics->BytesOut(n);
  }
  return grpc::Status::OK;
}

}  // namespace qopt::server
