#include "chunk_messages.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qopt {
namespace {

// Room before a chunk's bytes for its field's tag and length, varints of at most 5 bytes
// each.
constexpr size_t kPrefixRoom = 10;
constexpr int kLengthDelimited = 2;  // protobuf's wire type for bytes fields

size_t PutVarint(uint64_t value, uint8_t* out) {
  size_t n = 0;
  while (value >= 0x80) {
    out[n++] = static_cast<uint8_t>(value | 0x80);
    value >>= 7;
  }
  out[n++] = static_cast<uint8_t>(value);
  return n;
}

}  // namespace

WireMessage WireMessage::Of(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return WireMessage{grpc::ByteBuffer(&slice, 1)};
}

absl::StatusOr<size_t> ReadChunkMessage(int fd, const std::string& path, int field_number,
                                        size_t max_bytes, WireMessage* out) {
  // One allocation per message, freed by gRPC once it has sent the bytes.
  std::unique_ptr<char, decltype(&std::free)> buffer(static_cast<char*>(std::malloc(kPrefixRoom + max_bytes)),
                                                     &std::free);
  if (buffer == nullptr) return absl::ResourceExhaustedError("no memory for an upload chunk");
  char* data = buffer.get() + kPrefixRoom;
  size_t n = 0;
  while (n < max_bytes) {
    const ssize_t got = read(fd, data + n, max_bytes - n);
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat("error reading ", path, ": ", std::strerror(errno)));
    }
    n += static_cast<size_t>(got);
  }
  if (n == 0) return 0;
  uint8_t prefix[kPrefixRoom];
  size_t prefix_size = PutVarint((static_cast<uint64_t>(field_number) << 3) | kLengthDelimited, prefix);
  prefix_size += PutVarint(n, prefix + prefix_size);
  char* start = data - prefix_size;
  std::memcpy(start, prefix, prefix_size);
  grpc::Slice slice(start, prefix_size + n, &std::free, buffer.release());
  out->bytes = grpc::ByteBuffer(&slice, 1);
  return n;
}

absl::StatusOr<bool> WriteHeaderAndChunks(grpc::ClientWriter<WireMessage>& writer,
                                          const google::protobuf::MessageLite& header, int fd,
                                          const std::string& path, int field_number, size_t chunk_bytes) {
  if (!writer.Write(WireMessage::Of(header))) return false;
  WireMessage message;
  while (true) {
    absl::StatusOr<size_t> n = ReadChunkMessage(fd, path, field_number, chunk_bytes, &message);
    if (!n.ok()) return n.status();
    if (*n == 0) return true;
    if (!writer.Write(message)) return false;
  }
}

}  // namespace qopt
