// The gRPC services of qopt-server. Each handler converts the request to store calls and
// the store's absl::Status to grpc::Status (via ToGrpc) and nothing else.
#pragma once

#include <atomic>
#include <string>

#include "api/auth.h"
#include "api/metrics.h"
#include "qopt/v1/service.grpc.pb.h"
#include "store/blob_store.h"
#include "store/job_store.h"

namespace qopt::server {

struct ServerLimits {
  int64_t max_upload_bytes = int64_t{8} << 30;
  int max_lease_wait_ms = 30000;
};

class BlobServiceImpl final : public v1::BlobService::Service {
 public:
  BlobServiceImpl(BlobStore* blobs, const Authenticator* auth, Metrics* metrics, ServerLimits limits)
      : blobs_(blobs), auth_(auth), metrics_(metrics), limits_(limits) {}
  grpc::Status Upload(grpc::ServerContext* ctx, grpc::ServerReader<v1::UploadRequest>* reader,
                      v1::UploadResponse* response) override;
  grpc::Status GetUploadStatus(grpc::ServerContext* ctx, const v1::GetUploadStatusRequest* request,
                               v1::GetUploadStatusResponse* response) override;

 private:
  BlobStore* blobs_;
  const Authenticator* auth_;
  Metrics* metrics_;
  ServerLimits limits_;
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobStore* jobs, BlobStore* blobs, const Authenticator* auth, Metrics* metrics)
      : jobs_(jobs), blobs_(blobs), auth_(auth), metrics_(metrics) {}
  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status GetReport(grpc::ServerContext* ctx, const v1::GetReportRequest* request,
                         v1::Report* response) override;
  grpc::Status DownloadArtifact(grpc::ServerContext* ctx, const v1::DownloadArtifactRequest* request,
                                grpc::ServerWriter<v1::Chunk>* writer) override;

 private:
  JobStore* jobs_;
  BlobStore* blobs_;
  const Authenticator* auth_;
  Metrics* metrics_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(JobStore* jobs, BlobStore* blobs, const Authenticator* auth, Metrics* metrics,
                    ServerLimits limits)
      : jobs_(jobs), blobs_(blobs), auth_(auth), metrics_(metrics), limits_(limits) {}
  grpc::Status Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* request,
                     v1::LeaseResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ReadBlob(grpc::ServerContext* ctx, const v1::ReadBlobRequest* request,
                        grpc::ServerWriter<v1::Chunk>* writer) override;
  grpc::Status PutArtifact(grpc::ServerContext* ctx, grpc::ServerReader<v1::PutArtifactRequest>* reader,
                           v1::PutArtifactResponse* response) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* request,
                        v1::Empty* response) override;
  grpc::Status Fail(grpc::ServerContext* ctx, const v1::FailRequest* request,
                    v1::Empty* response) override;

 private:
  JobStore* jobs_;
  BlobStore* blobs_;
  const Authenticator* auth_;
  Metrics* metrics_;
  ServerLimits limits_;
};

/// Streams a stored blob in chunks of at most 1 MiB, counting the bytes sent.
grpc::Status StreamBlob(const BlobStore& blobs, const std::string& sha256,
                        grpc::ServerWriter<v1::Chunk>* writer, Metrics* metrics);

}  // namespace qopt::server
