// The gRPC services of qopt-server. Each handler converts the request to store calls and
// the store's absl::Status to grpc::Status (via ToGrpc) and nothing else.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "api/auth.h"
#include "api/idle_watchdog.h"
#include "api/metrics.h"
#include "qopt/v1/service.grpc.pb.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/job_store.h"

namespace qopt::server {

struct ServerLimits {
  int64_t max_upload_bytes = int64_t{8} << 30;
  int max_lease_wait_ms = 30000;
  /// Upload streams one tenant, and all tenants together, may have open at once (each
  /// holds a file descriptor and up to three threads: the handler's, the hashing one and,
  /// past 32 MiB, the one syncing behind the writes).
  int max_uploads_per_tenant = 8;
  int max_uploads = 256;
  /// Highest job priority a tenant may ask for; higher is INVALID_ARGUMENT.
  int max_priority = 100;
};

class BlobServiceImpl final : public v1::BlobService::Service {
 public:
  BlobServiceImpl(BlobStore* blobs, Catalog* catalog, const Authenticator* auth, Metrics* metrics,
                  IdleWatchdog* watchdog, ServerLimits limits)
      : blobs_(blobs), catalog_(catalog), auth_(auth), metrics_(metrics), watchdog_(watchdog),
        limits_(limits) {}
  grpc::Status Upload(grpc::ServerContext* ctx, grpc::ServerReader<v1::UploadRequest>* reader,
                      v1::UploadResponse* response) override;
  grpc::Status GetUploadStatus(grpc::ServerContext* ctx, const v1::GetUploadStatusRequest* request,
                               v1::GetUploadStatusResponse* response) override;
  grpc::Status GetUsage(grpc::ServerContext* ctx, const v1::GetUsageRequest* request,
                        v1::Usage* response) override;

 private:
  BlobStore* blobs_;
  Catalog* catalog_;
  const Authenticator* auth_;
  Metrics* metrics_;
  IdleWatchdog* watchdog_;
  ServerLimits limits_;
  // Uploads streaming now, by sha256 and tenant key: one at a time per partial file; and
  // how many each tenant has open.
  std::mutex active_mu_;
  std::set<std::string> active_;
  std::map<std::string, int> open_per_tenant_;
  int open_total_ = 0;
  friend class UploadSlot;
};

/// Models and datasets share one implementation over the catalog's records.
class ModelServiceImpl final : public v1::ModelService::Service {
 public:
  ModelServiceImpl(Catalog* catalog, const Authenticator* auth, Metrics* metrics)
      : catalog_(catalog), auth_(auth), metrics_(metrics) {}
  grpc::Status CreateModel(grpc::ServerContext* ctx, const v1::CreateModelRequest* request,
                           v1::Model* response) override;
  grpc::Status GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* request,
                        v1::Model* response) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* ctx, const v1::DeleteModelRequest* request,
                           v1::Empty* response) override;

 private:
  Catalog* catalog_;
  const Authenticator* auth_;
  Metrics* metrics_;
};

class DatasetServiceImpl final : public v1::DatasetService::Service {
 public:
  DatasetServiceImpl(Catalog* catalog, const Authenticator* auth, Metrics* metrics)
      : catalog_(catalog), auth_(auth), metrics_(metrics) {}
  grpc::Status CreateDataset(grpc::ServerContext* ctx, const v1::CreateDatasetRequest* request,
                             v1::Dataset* response) override;
  grpc::Status GetDataset(grpc::ServerContext* ctx, const v1::GetDatasetRequest* request,
                          v1::Dataset* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* ctx, const v1::ListDatasetsRequest* request,
                            v1::ListDatasetsResponse* response) override;
  grpc::Status DeleteDataset(grpc::ServerContext* ctx, const v1::DeleteDatasetRequest* request,
                             v1::Empty* response) override;

 private:
  Catalog* catalog_;
  const Authenticator* auth_;
  Metrics* metrics_;
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobStore* jobs, BlobStore* blobs, Catalog* catalog, const Authenticator* auth,
                 Metrics* metrics, ServerLimits limits)
      : jobs_(jobs), blobs_(blobs), catalog_(catalog), auth_(auth), metrics_(metrics), limits_(limits) {}
  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status DeleteJob(grpc::ServerContext* ctx, const v1::DeleteJobRequest* request,
                         v1::Empty* response) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status GetReport(grpc::ServerContext* ctx, const v1::GetReportRequest* request,
                         v1::Report* response) override;
  grpc::Status DownloadArtifact(grpc::ServerContext* ctx, const v1::DownloadArtifactRequest* request,
                                grpc::ServerWriter<v1::Chunk>* writer) override;

 private:
  JobStore* jobs_;
  BlobStore* blobs_;
  Catalog* catalog_;
  const Authenticator* auth_;
  Metrics* metrics_;
  ServerLimits limits_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(JobStore* jobs, BlobStore* blobs, Catalog* catalog, const Authenticator* auth,
                    Metrics* metrics, IdleWatchdog* watchdog, ServerLimits limits)
      : jobs_(jobs), blobs_(blobs), catalog_(catalog), auth_(auth), metrics_(metrics), watchdog_(watchdog),
        limits_(limits) {}
  grpc::Status Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* request,
                     v1::LeaseResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ReadBlob(grpc::ServerContext* ctx, const v1::ReadBlobRequest* request,
                        grpc::ServerWriter<v1::Chunk>* writer) override;
  grpc::Status PutArtifact(grpc::ServerContext* ctx, grpc::ServerReader<v1::PutArtifactRequest>* reader,
                           v1::PutArtifactResponse* response) override;
  grpc::Status PutCheckpoint(grpc::ServerContext* ctx, grpc::ServerReader<v1::PutCheckpointRequest>* reader,
                             v1::Empty* response) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* request,
                        v1::Empty* response) override;
  grpc::Status Fail(grpc::ServerContext* ctx, const v1::FailRequest* request,
                    v1::Empty* response) override;

 private:
  /// The worker token, then the call's lease token, which must be the lease of `job_id`
  /// and `lease_id` when those are given.
  grpc::Status AuthorizeLease(grpc::ServerContext* ctx, const std::string& job_id,
                              const std::string& lease_id, LeaseScope* scope);

  JobStore* jobs_;
  BlobStore* blobs_;
  Catalog* catalog_;
  const Authenticator* auth_;
  Metrics* metrics_;
  IdleWatchdog* watchdog_;
  ServerLimits limits_;
};

/// Streams a stored blob in chunks of at most 1 MiB, counting the bytes sent.
grpc::Status StreamBlob(const BlobStore& blobs, const std::string& sha256,
                        grpc::ServerWriter<v1::Chunk>* writer, Metrics* metrics);

}  // namespace qopt::server
