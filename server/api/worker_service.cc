#include <algorithm>

#include "absl/strings/str_cat.h"
#include "api/services.h"

namespace qopt::server {

grpc::Status WorkerServiceImpl::Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* request,
                                      v1::LeaseResponse* response) {
  Metrics::RpcTimer timer(metrics_, "Lease");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  metrics_->WorkerSeen(request->worker_id());
  const int wait = std::clamp(request->wait_ms(), 0, limits_.max_lease_wait_ms);
  auto grant = jobs_->Lease(request->worker_id(), wait);
  if (absl::IsNotFound(grant.status())) return grpc::Status::OK;  // nothing queued: empty reply
  if (!grant.ok()) return ToGrpc(grant.status());
  response->set_job_id(grant->job_id);
  response->set_lease_id(grant->lease_id);
  *response->mutable_recipe() = grant->recipe;
  response->set_lease_expires_unix_ms(grant->expires_unix_ms);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  Metrics::RpcTimer timer(metrics_, "Heartbeat");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  metrics_->WorkerSeen(request->worker_id());
  auto result = jobs_->Heartbeat(*request);
  if (!result.ok()) return ToGrpc(result.status());
  response->set_cancelled(result->first);
  response->set_lease_expires_unix_ms(result->second);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::ReadBlob(grpc::ServerContext* ctx, const v1::ReadBlobRequest* request,
                                         grpc::ServerWriter<v1::Chunk>* writer) {
  Metrics::RpcTimer timer(metrics_, "ReadBlob");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  return StreamBlob(*blobs_, request->sha256(), writer, metrics_);
}

grpc::Status WorkerServiceImpl::PutArtifact(grpc::ServerContext* ctx,
                                            grpc::ServerReader<v1::PutArtifactRequest>* reader,
                                            v1::PutArtifactResponse* response) {
  Metrics::RpcTimer timer(metrics_, "PutArtifact");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  v1::PutArtifactRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "an artifact upload starts with its header"};
  }
  const v1::Artifact header = msg.header();
  const std::string job_id = msg.job_id(), lease_id = msg.lease_id();
  if (header.size() > limits_.max_upload_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StrCat("artifact of ", header.size(), " bytes is too large")};
  }
  if (!blobs_->Exists(header.sha256())) {
    auto upload = blobs_->Begin(header.sha256(), header.size(), 0, job_id);
    if (!upload.ok()) return ToGrpc(upload.status());
    while (reader->Read(&msg)) {
      if (absl::Status s = (*upload)->Write(msg.chunk()); !s.ok()) return ToGrpc(s);
      metrics_->BytesIn(static_cast<int64_t>(msg.chunk().size()));
    }
    if (absl::Status s = (*upload)->Commit(); !s.ok()) return ToGrpc(s);
  } else {
    while (reader->Read(&msg)) {
    }
  }
  return ToGrpc(jobs_->AddArtifact(job_id, lease_id, header));
}

grpc::Status WorkerServiceImpl::Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* request,
                                         v1::Empty*) {
  Metrics::RpcTimer timer(metrics_, "Complete");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  return ToGrpc(jobs_->Complete(request->job_id(), request->lease_id(), request->report_json()));
}

grpc::Status WorkerServiceImpl::Fail(grpc::ServerContext* ctx, const v1::FailRequest* request,
                                     v1::Empty*) {
  Metrics::RpcTimer timer(metrics_, "Fail");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  return ToGrpc(jobs_->Fail(request->job_id(), request->lease_id(), request->error()));
}

}  // namespace qopt::server
