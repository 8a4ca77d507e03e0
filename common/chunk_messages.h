// Client streams of a file's bytes whose messages are framed by hand, so each chunk goes
// from read() straight into the buffer gRPC sends. With generated messages a chunk is
// copied twice in user space: read() into the message's string, then the string into the
// serialized buffer.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"

namespace qopt {

/// One message of a client stream, already in protobuf's wire format.
struct WireMessage {
  grpc::ByteBuffer bytes;

  /// `message` serialized.
  static WireMessage Of(const google::protobuf::MessageLite& message);
};

}  // namespace qopt

// Writing a WireMessage hands gRPC its slices (reference counted, not copied).
template <>
class grpc::SerializationTraits<qopt::WireMessage> {
 public:
  static grpc::Status Serialize(const qopt::WireMessage& message, grpc::ByteBuffer* out, bool* own_buffer) {
    *out = message.bytes;
    *own_buffer = true;
    return grpc::Status::OK;
  }
  static grpc::Status Deserialize(grpc::ByteBuffer* in, qopt::WireMessage* message) {
    message->bytes.Swap(in);
    return grpc::Status::OK;
  }
};

namespace qopt {

/// Reads the next at most `max_bytes` of `fd` (fewer only at its end) into `out` as a
/// message whose one field is the bytes field `field_number`: the same bytes a generated
/// message with only that field set serializes to. Returns how many bytes of the file it
/// holds, 0 at the end of the file; a failed read is an error naming `path`.
absl::StatusOr<size_t> ReadChunkMessage(int fd, const std::string& path, int field_number,
                                        size_t max_bytes, WireMessage* out);

/// An upload's whole request side: writes `header`, then the rest of `fd` as messages of
/// ReadChunkMessage, `chunk_bytes` of the file each. Returns false when the stream broke
/// first (its Finish() says why); a failed read is an error naming `path`.
absl::StatusOr<bool> WriteHeaderAndChunks(grpc::ClientWriter<WireMessage>& writer,
                                          const google::protobuf::MessageLite& header, int fd,
                                          const std::string& path, int field_number, size_t chunk_bytes);

/// Opens a client-streaming call `method` ("/package.Service/Method") on `channel` whose
/// requests are written as WireMessages; the response is a generated message as usual.
template <typename Response>
std::unique_ptr<grpc::ClientWriter<WireMessage>> OpenWireStream(grpc::ChannelInterface* channel,
                                                                const std::string& method,
                                                                grpc::ClientContext* context,
                                                                Response* response) {
  const grpc::internal::RpcMethod rpc(method.c_str(), grpc::internal::RpcMethod::CLIENT_STREAMING);
  return std::unique_ptr<grpc::ClientWriter<WireMessage>>(
      grpc::internal::ClientWriterFactory<WireMessage>::Create(channel, rpc, context, response));
}

}  // namespace qopt
