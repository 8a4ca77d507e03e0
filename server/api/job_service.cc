#include "absl/strings/str_cat.h"
#include "api/services.h"
#include "recipe_check.h"
#include "recipe_files.h"
#include "report_json.h"

namespace qopt::server {
grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* request,
                                       v1::Job* response) {
  Metrics::RpcTimer timer(metrics_, "SubmitJob");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  // The server checks the recipe's shape and its blobs but never opens a model: workers
  // do, in their own processes.
  // Rejected rather than clamped: a job quietly run at another priority than asked would
  // surprise its owner more than an error naming the limit.
  if (request->priority() > limits_.max_priority) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("priority ", request->priority(), " is above this server's maximum of ",
                         limits_.max_priority)};
  }
  v1::Recipe recipe = request->recipe();
  if (absl::Status s = CheckRecipe(recipe); !s.ok()) return ToGrpc(s);
  if (absl::Status s = catalog_->ResolveRecipe(tenant, &recipe); !s.ok()) return ToGrpc(s);
  if (absl::Status s = catalog_->CheckQuota(tenant, 0); !s.ok()) return ToGrpc(s);
  std::vector<std::string> inputs;
  for (const RecipeFile& file : RecipeFiles(recipe)) inputs.push_back(file.value);
  auto job = jobs_->Submit(tenant, recipe, request->priority(), request->request_id(), inputs);
  if (!job.ok()) return ToGrpc(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  Metrics::RpcTimer timer(metrics_, "GetJob");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  auto job = jobs_->Get(tenant, request->id());
  if (!job.ok()) return ToGrpc(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  Metrics::RpcTimer timer(metrics_, "ListJobs");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  std::vector<v1::JobState> states{request->state()};
  for (int state : request->states()) states.push_back(static_cast<v1::JobState>(state));
  auto list = jobs_->List(tenant, states, request->page_size(), request->page_token());
  if (!list.ok()) return ToGrpc(list.status());
  *response = *list;
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* request,
                                       v1::Job* response) {
  Metrics::RpcTimer timer(metrics_, "CancelJob");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  auto job = jobs_->Cancel(tenant, request->id());
  if (!job.ok()) return ToGrpc(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::DeleteJob(grpc::ServerContext* ctx, const v1::DeleteJobRequest* request,
                                       v1::Empty*) {
  Metrics::RpcTimer timer(metrics_, "DeleteJob");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  auto blobs = jobs_->Delete(tenant, request->id());
  if (!blobs.ok()) return ToGrpc(blobs.status());
  return ToGrpc(catalog_->Release(tenant, *blobs));
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  Metrics::RpcTimer timer(metrics_, "WatchJob");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  int64_t after = request->after_sequence();
  while (!ctx->IsCancelled()) {
    auto events = jobs_->Events(tenant, request->id(), after);
    if (!events.ok()) return ToGrpc(events.status());
    for (const auto& e : *events) {
      if (!writer->Write(e)) return grpc::Status::OK;  // watcher went away
      after = e.sequence();
      if (IsFinal(e.state())) return grpc::Status::OK;
    }
    jobs_->WaitForEvent(request->id(), after, 1000);
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetReport(grpc::ServerContext* ctx, const v1::GetReportRequest* request,
                                       v1::Report* response) {
  Metrics::RpcTimer timer(metrics_, "GetReport");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  auto json = jobs_->Report(tenant, request->id());
  if (!json.ok()) return ToGrpc(json.status());
  auto report = ReportFromJson(*json);
  // The worker wrote it: a report that does not parse is the service's fault, not the caller's.
  if (!report.ok()) return ToGrpc(absl::InternalError(absl::StrCat("job ", request->id(), ": ", report.status().message())));
  *response = *std::move(report);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::DownloadArtifact(grpc::ServerContext* ctx,
                                              const v1::DownloadArtifactRequest* request,
                                              grpc::ServerWriter<v1::Chunk>* writer) {
  Metrics::RpcTimer timer(metrics_, "DownloadArtifact");
  std::string tenant;
  if (grpc::Status s = auth_->Tenant(ctx, &tenant); !s.ok()) return s;
  auto artifact = jobs_->GetArtifact(tenant, request->job_id(), request->name());
  if (!artifact.ok()) return ToGrpc(artifact.status());
  return StreamBlob(*blobs_, artifact->sha256(), writer, metrics_);
}

}  // namespace qopt::server
