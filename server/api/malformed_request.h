// A request that does not parse (e.g. a string field that is not UTF-8) is the caller's
// error: gRPC's synchronous server answers it with INTERNAL and an empty message before
// any handler runs. This interceptor turns exactly that answer into INVALID_ARGUMENT
// naming the method. Handlers never return INTERNAL without a message (ToGrpc keeps
// theirs), so no server fault is relabelled.
#pragma once

#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace qopt::server {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MalformedRequestInterceptorFactory();

}  // namespace qopt::server
