// Bearer-token authentication: every call carries `authorization: Bearer <token>`.
// Client tokens map to tenants; worker tokens admit WorkerService calls only.
#pragma once

#include <map>
#include <set>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace qopt::server {

class Authenticator {
 public:
  /// Reads a JSON file {"tenants": {"<token>": "<tenant>"}, "worker_tokens": ["<token>"]}.
  static absl::StatusOr<Authenticator> FromFile(const std::string& path);
  /// No file: every caller is tenant "default" and any caller may act as a worker.
  static Authenticator Open();

  /// The caller's tenant, or UNAUTHENTICATED.
  grpc::Status Tenant(const grpc::ServerContext* ctx, std::string* tenant) const;
  grpc::Status Worker(const grpc::ServerContext* ctx) const;
  /// A worker token for the server's own local workers ("" when open).
  std::string AnyWorkerToken() const { return workers_.empty() ? "" : *workers_.begin(); }
  /// No auth file: every caller is tenant "default" and may act as a worker.
  bool open() const { return open_; }

 private:
  bool open_ = true;
  std::map<std::string, std::string> tenants_;
  std::set<std::string> workers_;
};

/// The lease token a worker's call carries (`qopt-lease-token` metadata), "" when none.
std::string LeaseToken(const grpc::ServerContext* ctx);

/// absl::Status -> grpc::Status, keeping code and message (the one conversion point).
grpc::Status ToGrpc(const absl::Status& s);

}  // namespace qopt::server
