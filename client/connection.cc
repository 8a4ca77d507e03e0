#include "connection.h"

#include <chrono>
#include <utility>

namespace qopt::cli {
namespace {

constexpr auto kUnaryDeadline = std::chrono::seconds(60);
// Reports and job listings can exceed gRPC's 4 MiB default; chunks never do.
constexpr int kMaxReceiveBytes = 64 << 20;

}  // namespace

Connection::Connection(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options_.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls_ca_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  channel_ = grpc::CreateCustomChannel(options_.server, credentials, args);
  jobs_ = v1::JobService::NewStub(channel_);
  blobs_ = v1::BlobService::NewStub(channel_);
  models_ = v1::ModelService::NewStub(channel_);
  datasets_ = v1::DatasetService::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Connection::StreamContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
  return context;
}

std::unique_ptr<grpc::ClientContext> Connection::UnaryContext() const {
  auto context = StreamContext();
  context->set_deadline(std::chrono::system_clock::now() + kUnaryDeadline);
  return context;
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace qopt::cli
