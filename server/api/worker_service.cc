#include <algorithm>

#include "absl/strings/str_cat.h"
#include "api/services.h"
#include "file_name.h"

namespace qopt::server {
namespace {

// The chunks that follow an upload's header (PutArtifact, PutCheckpoint), written to
// `upload` and sealed: size and sha256 checked. The upload is discarded on any failure:
// uploads from workers are never resumed.
template <typename Request>
grpc::Status ReceiveChunks(grpc::ServerContext* ctx, grpc::ServerReader<Request>* reader, BlobUpload& upload,
                           IdleWatchdog::Watch& watch, Metrics* metrics, const char* what) {
  const auto fail = [&](grpc::Status s) {
    upload.Discard();
    return s;
  };
  Request msg;
  while (reader->Read(&msg)) {
    watch.Touch();
    if (!msg.has_chunk()) {
      return fail({grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("only the first ", what, " message is a header")});
    }
    const int64_t bytes = static_cast<int64_t>(msg.chunk().size());
    if (absl::Status s = upload.Write(std::move(*msg.mutable_chunk())); !s.ok()) return fail(ToGrpc(s));
    metrics->BytesIn(bytes);
  }
  if (watch.timed_out()) return fail({grpc::StatusCode::CANCELLED, absl::StrCat(what, " upload idle; send it again")});
  if (ctx->IsCancelled()) return fail({grpc::StatusCode::CANCELLED, absl::StrCat(what, " upload cancelled")});
  if (absl::Status s = upload.Seal(); !s.ok()) return fail(ToGrpc(s));
  return grpc::Status::OK;
}

}  // namespace

grpc::Status WorkerServiceImpl::AuthorizeLease(grpc::ServerContext* ctx, const std::string& job_id,
                                               const std::string& lease_id, LeaseScope* scope) {
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  auto held = jobs_->LeaseOfToken(LeaseToken(ctx));
  if (!held.ok()) return ToGrpc(held.status());
  if (held->job_id != job_id || held->lease_id != lease_id) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            absl::StrCat("the lease token is for another lease than ", lease_id, " on job ", job_id)};
  }
  *scope = *std::move(held);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* request,
                                      v1::LeaseResponse* response) {
  Metrics::RpcTimer timer(metrics_, "Lease");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  metrics_->WorkerSeen(request->worker_id());
  std::vector<std::string> offered(request->devices().begin(), request->devices().end());
  if (offered.empty()) offered.push_back(request->device().empty() ? "cpu" : request->device());
  std::vector<std::string> kinds;
  for (const std::string& device : offered) {
    v1::Recipe probe;
    probe.set_device(device);
    kinds.push_back(DeviceKind(probe));
  }
  const int wait = std::clamp(request->wait_ms(), 0, limits_.max_lease_wait_ms);
  auto grant = jobs_->Lease(request->worker_id(), kinds, wait);
  if (absl::IsNotFound(grant.status())) return grpc::Status::OK;  // nothing queued: empty reply
  if (!grant.ok()) return ToGrpc(grant.status());
  response->set_job_id(grant->job_id);
  response->set_lease_id(grant->lease_id);
  *response->mutable_recipe() = grant->recipe;
  response->set_lease_expires_unix_ms(grant->expires_unix_ms);
  response->set_lease_token(grant->token);
  response->set_checkpoint_sha256(grant->checkpoint_sha256);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  Metrics::RpcTimer timer(metrics_, "Heartbeat");
  LeaseScope scope;
  if (grpc::Status s = AuthorizeLease(ctx, request->job_id(), request->lease_id(), &scope); !s.ok()) return s;
  metrics_->WorkerSeen(request->worker_id());
  auto result = jobs_->Heartbeat(*request);
  if (!result.ok()) return ToGrpc(result.status());
  // Counted once stored: a worker sends a refused heartbeat's step reports again.
  for (const v1::StepReport& step : request->step_reports()) metrics_->StepFinished(step.step(), step.seconds());
  response->set_cancelled(result->first);
  response->set_lease_expires_unix_ms(result->second);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::ReadBlob(grpc::ServerContext* ctx, const v1::ReadBlobRequest* request,
                                         grpc::ServerWriter<v1::Chunk>* writer) {
  Metrics::RpcTimer timer(metrics_, "ReadBlob");
  if (grpc::Status s = auth_->Worker(ctx); !s.ok()) return s;
  if (!IsSha256Hex(request->sha256())) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "sha256 must be 64 lowercase hex digits"};
  }
  auto scope = jobs_->LeaseOfToken(LeaseToken(ctx));
  if (!scope.ok()) return ToGrpc(scope.status());
  // A lease reads its own job's inputs and checkpoint and nothing else.
  auto reads = jobs_->Reads(scope->job_id, request->sha256());
  if (!reads.ok()) return ToGrpc(reads.status());
  if (!*reads) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            absl::StrCat("blob ", request->sha256(), " is neither an input nor the checkpoint of job ", scope->job_id)};
  }
  return StreamBlob(*blobs_, request->sha256(), writer, metrics_);
}

grpc::Status WorkerServiceImpl::PutArtifact(grpc::ServerContext* ctx,
                                            grpc::ServerReader<v1::PutArtifactRequest>* reader,
                                            v1::PutArtifactResponse* response) {
  Metrics::RpcTimer timer(metrics_, "PutArtifact");
  IdleWatchdog::Watch watch(watchdog_, ctx);
  v1::PutArtifactRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "an artifact upload starts with its header"};
  }
  watch.Touch();
  const v1::Artifact header = msg.header();
  LeaseScope scope;
  if (grpc::Status s = AuthorizeLease(ctx, msg.job_id(), msg.lease_id(), &scope); !s.ok()) return s;
  if (absl::Status s = CheckPlainFileName("artifact", header.name()); !s.ok()) return ToGrpc(s);
  if (header.size() > limits_.max_upload_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StrCat("artifact of ", header.size(), " bytes is too large")};
  }
  // Every byte is sent and checked, even for a blob the server holds already: an artifact
  // is what this lease produced, never a hash it happens to know.
  auto upload = blobs_->Begin(header.sha256(), header.size(), 0, RandomId("put-"));
  if (!upload.ok()) return ToGrpc(upload.status());
  if (grpc::Status s = ReceiveChunks(ctx, reader, **upload, watch, metrics_, "artifact"); !s.ok()) return s;
  absl::Status added = jobs_->AddArtifact(scope.job_id, scope.lease_id, header, [&] { return (*upload)->Publish(); });
  if (!added.ok()) {
    (*upload)->Discard();
    return ToGrpc(added);
  }
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::PutCheckpoint(grpc::ServerContext* ctx,
                                              grpc::ServerReader<v1::PutCheckpointRequest>* reader, v1::Empty*) {
  Metrics::RpcTimer timer(metrics_, "PutCheckpoint");
  IdleWatchdog::Watch watch(watchdog_, ctx);
  v1::PutCheckpointRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "a checkpoint upload starts with its header"};
  }
  watch.Touch();
  const v1::CheckpointHeader header = msg.header();
  LeaseScope scope;
  if (grpc::Status s = AuthorizeLease(ctx, msg.job_id(), msg.lease_id(), &scope); !s.ok()) return s;
  // What a job's process wrote: untrusted bytes of a size it chose, so capped like any upload.
  if (header.size() > limits_.max_upload_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("checkpoint of ", header.size(), " bytes is larger than the server accepts (",
                         limits_.max_upload_bytes, ")")};
  }
  auto upload = blobs_->Begin(header.sha256(), header.size(), 0, RandomId("put-"));
  if (!upload.ok()) return ToGrpc(upload.status());
  if (grpc::Status s = ReceiveChunks(ctx, reader, **upload, watch, metrics_, "checkpoint"); !s.ok()) return s;
  auto replaced = jobs_->SetCheckpoint(scope.job_id, scope.lease_id, header, [&] { return (*upload)->Publish(); });
  if (!replaced.ok()) {
    (*upload)->Discard();
    return ToGrpc(replaced.status());
  }
  // The checkpoint before is of no use once this one is stored; should this fail, garbage
  // collection removes it.
  catalog_->RemoveUnreferenced({*replaced}).IgnoreError();
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* request,
                                         v1::Empty*) {
  Metrics::RpcTimer timer(metrics_, "Complete");
  LeaseScope scope;
  if (grpc::Status s = AuthorizeLease(ctx, request->job_id(), request->lease_id(), &scope); !s.ok()) return s;
  return ToGrpc(jobs_->Complete(scope.job_id, scope.lease_id, request->report_json()));
}

grpc::Status WorkerServiceImpl::Fail(grpc::ServerContext* ctx, const v1::FailRequest* request,
                                     v1::Empty*) {
  Metrics::RpcTimer timer(metrics_, "Fail");
  LeaseScope scope;
  if (grpc::Status s = AuthorizeLease(ctx, request->job_id(), request->lease_id(), &scope); !s.ok()) return s;
  return ToGrpc(jobs_->Fail(scope.job_id, scope.lease_id, request->error()));
}

}  // namespace qopt::server
