// The channel to qopt-server and the per-call context every RPC shares (bearer token,
// deadline), plus the one place where grpc::Status becomes absl::Status.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "qopt/v1/service.grpc.pb.h"

namespace qopt::cli {

struct ClientOptions {
  /// HOST:PORT of qopt-server.
  std::string server;
  /// Sent as "authorization: Bearer <token>" when non-empty.
  std::string token;
  /// PEM certificate(s) to trust; when set the channel uses TLS.
  std::string tls_ca_pem;
  /// Print machine-readable JSON instead of text.
  bool json = false;
};

class Connection {
 public:
  explicit Connection(ClientOptions options);

  const ClientOptions& options() const { return options_; }
  grpc::Channel& channel() { return *channel_; }
  v1::JobService::Stub& jobs() { return *jobs_; }
  v1::BlobService::Stub& blobs() { return *blobs_; }
  v1::ModelService::Stub& models() { return *models_; }
  v1::DatasetService::Stub& datasets() { return *datasets_; }

  /// A fresh context for one unary call: token plus a deadline, so a hung server cannot
  /// hang a script.
  std::unique_ptr<grpc::ClientContext> UnaryContext() const;
  /// A context for a stream (upload, download, watch): token, no deadline, because
  /// streams legitimately last as long as a large file or a long job.
  std::unique_ptr<grpc::ClientContext> StreamContext() const;

 private:
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::BlobService::Stub> blobs_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
};

/// Keeps the code (gRPC and Abseil share the numbering) and the message.
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace qopt::cli
