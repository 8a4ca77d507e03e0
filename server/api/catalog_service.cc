// ModelService and DatasetService: thin adapters over the catalog's records (a model is
// a record with a name, a blob and a description; a dataset adds labels and a format).
#include "api/services.h"

namespace qopt::server {
namespace {

v1::Model ToModel(const v1::Dataset& r) {
  v1::Model m;
  m.set_name(r.name());
  m.set_sha256(r.sha256());
  m.set_size(r.size());
  m.set_description(r.description());
  m.set_created_unix_ms(r.created_unix_ms());
  return m;
}

v1::Dataset FromModel(const v1::Model& m) {
  v1::Dataset r;
  r.set_name(m.name());
  r.set_sha256(m.sha256());
  r.set_description(m.description());
  return r;
}

// Authenticates, then runs `body` with the caller's tenant.
template <typename Body>
grpc::Status WithTenant(const Authenticator* auth, Metrics* metrics, const char* rpc,
                        grpc::ServerContext* ctx, Body body) {
  Metrics::RpcTimer timer(metrics, rpc);
  std::string tenant;
  if (grpc::Status s = auth->Tenant(ctx, &tenant); !s.ok()) return s;
  return ToGrpc(body(tenant));
}

}  // namespace

grpc::Status ModelServiceImpl::CreateModel(grpc::ServerContext* ctx, const v1::CreateModelRequest* request,
                                           v1::Model* response) {
  return WithTenant(auth_, metrics_, "CreateModel", ctx, [&](const std::string& tenant) -> absl::Status {
    auto r = catalog_->PutRecord(tenant, RecordKind::kModel, FromModel(request->model()), request->replace());
    if (r.ok()) *response = ToModel(*r);
    return r.status();
  });
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* request,
                                        v1::Model* response) {
  return WithTenant(auth_, metrics_, "GetModel", ctx, [&](const std::string& tenant) -> absl::Status {
    auto r = catalog_->GetRecord(tenant, RecordKind::kModel, request->name());
    if (r.ok()) *response = ToModel(*r);
    return r.status();
  });
}

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* request,
                                          v1::ListModelsResponse* response) {
  return WithTenant(auth_, metrics_, "ListModels", ctx, [&](const std::string& tenant) -> absl::Status {
    auto page = catalog_->ListRecords(tenant, RecordKind::kModel, request->page_size(), request->page_token());
    if (!page.ok()) return page.status();
    for (const v1::Dataset& r : page->first) *response->add_models() = ToModel(r);
    response->set_next_page_token(page->second);
    return absl::OkStatus();
  });
}

grpc::Status ModelServiceImpl::DeleteModel(grpc::ServerContext* ctx, const v1::DeleteModelRequest* request,
                                           v1::Empty*) {
  return WithTenant(auth_, metrics_, "DeleteModel", ctx, [&](const std::string& tenant) {
    return catalog_->DeleteRecord(tenant, RecordKind::kModel, request->name());
  });
}

grpc::Status DatasetServiceImpl::CreateDataset(grpc::ServerContext* ctx,
                                               const v1::CreateDatasetRequest* request,
                                               v1::Dataset* response) {
  return WithTenant(auth_, metrics_, "CreateDataset", ctx, [&](const std::string& tenant) -> absl::Status {
    auto r = catalog_->PutRecord(tenant, RecordKind::kDataset, request->dataset(), request->replace());
    if (r.ok()) *response = *r;
    return r.status();
  });
}

grpc::Status DatasetServiceImpl::GetDataset(grpc::ServerContext* ctx, const v1::GetDatasetRequest* request,
                                            v1::Dataset* response) {
  return WithTenant(auth_, metrics_, "GetDataset", ctx, [&](const std::string& tenant) -> absl::Status {
    auto r = catalog_->GetRecord(tenant, RecordKind::kDataset, request->name());
    if (r.ok()) *response = *r;
    return r.status();
  });
}

grpc::Status DatasetServiceImpl::ListDatasets(grpc::ServerContext* ctx,
                                              const v1::ListDatasetsRequest* request,
                                              v1::ListDatasetsResponse* response) {
  return WithTenant(auth_, metrics_, "ListDatasets", ctx, [&](const std::string& tenant) -> absl::Status {
    auto page = catalog_->ListRecords(tenant, RecordKind::kDataset, request->page_size(), request->page_token());
    if (!page.ok()) return page.status();
    for (const v1::Dataset& r : page->first) *response->add_datasets() = r;
    response->set_next_page_token(page->second);
    return absl::OkStatus();
  });
}

grpc::Status DatasetServiceImpl::DeleteDataset(grpc::ServerContext* ctx,
                                               const v1::DeleteDatasetRequest* request, v1::Empty*) {
  return WithTenant(auth_, metrics_, "DeleteDataset", ctx, [&](const std::string& tenant) {
    return catalog_->DeleteRecord(tenant, RecordKind::kDataset, request->name());
  });
}

}  // namespace qopt::server
