#include "api/auth.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace qopt::server {
namespace {

std::string BearerToken(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return "";
  const std::string value(it->second.data(), it->second.size());
  const std::string prefix = "Bearer ";
  return value.rfind(prefix, 0) == 0 ? value.substr(prefix.size()) : "";
}

}  // namespace

absl::StatusOr<Authenticator> Authenticator::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read auth file ", path));
  Authenticator a;
  a.open_ = false;
  try {
    const auto j = nlohmann::json::parse(in);
    for (const auto& [token, tenant] : j.at("tenants").items()) a.tenants_[token] = tenant.get<std::string>();
    for (const auto& token : j.value("worker_tokens", nlohmann::json::array())) {
      a.workers_.insert(token.get<std::string>());
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return a;
}

Authenticator Authenticator::Open() { return Authenticator(); }

grpc::Status Authenticator::Tenant(const grpc::ServerContext* ctx, std::string* tenant) const {
  if (open_) {
    *tenant = "default";
    return grpc::Status::OK;
  }
  const std::string token = BearerToken(ctx);
  if (token.empty()) return {grpc::StatusCode::UNAUTHENTICATED, "missing bearer token"};
  auto it = tenants_.find(token);
  if (it == tenants_.end()) return {grpc::StatusCode::UNAUTHENTICATED, "unknown token"};
  *tenant = it->second;
  return grpc::Status::OK;
}

grpc::Status Authenticator::Worker(const grpc::ServerContext* ctx) const {
  if (open_) return grpc::Status::OK;
  const std::string token = BearerToken(ctx);
  if (token.empty()) return {grpc::StatusCode::UNAUTHENTICATED, "missing bearer token"};
  if (!workers_.count(token)) return {grpc::StatusCode::UNAUTHENTICATED, "not a worker token"};
  return grpc::Status::OK;
}

std::string LeaseToken(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("qopt-lease-token");
  return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace qopt::server
