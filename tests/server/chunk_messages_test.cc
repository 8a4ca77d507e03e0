// Upload chunks framed by hand (common/chunk_messages.h) are the bytes a generated
// UploadRequest serializes to, so the server reads them as it reads any client's.
#include "chunk_messages.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "qopt/v1/service.pb.h"

namespace qopt {
namespace {

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& slice : slices) out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return out;
}

class ChunkMessagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() / ("qopt_chunks_" + std::to_string(getpid()))).string();
    std::mt19937 rng(7);
    bytes_.resize(3 * kChunk + 1234);
    for (char& c : bytes_) c = static_cast<char>(rng());
    std::ofstream(path_, std::ios::binary).write(bytes_.data(), static_cast<std::streamsize>(bytes_.size()));
  }
  void TearDown() override { std::filesystem::remove(path_); }

  static constexpr size_t kChunk = 200 * 1000;  // a length whose varint takes 3 bytes
  std::string path_, bytes_;
};

TEST_F(ChunkMessagesTest, MessagesAreWhatTheGeneratedMessageSerializesTo) {
  const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string received;
  WireMessage message;
  for (;;) {
    auto n = ReadChunkMessage(fd, path_, v1::UploadRequest::kChunkFieldNumber, kChunk, &message);
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
    const std::string wire = Flatten(message.bytes);
    v1::UploadRequest expected;
    expected.set_chunk(bytes_.substr(received.size(), *n));
    EXPECT_EQ(wire, expected.SerializeAsString()) << "message " << received.size() / kChunk;
    v1::UploadRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(wire));
    ASSERT_TRUE(parsed.has_chunk());
    EXPECT_EQ(parsed.chunk().size(), *n);
    EXPECT_EQ(*n, std::min(kChunk, bytes_.size() - received.size())) << "only the last chunk is short";
    received += parsed.chunk();
  }
  close(fd);
  EXPECT_EQ(received, bytes_);
}

TEST_F(ChunkMessagesTest, HeadersSerializeAsGeneratedMessages) {
  v1::UploadRequest header;
  header.mutable_header()->set_sha256(std::string(64, 'a'));
  header.mutable_header()->set_size(123);
  EXPECT_EQ(Flatten(WireMessage::Of(header).bytes), header.SerializeAsString());
}

TEST_F(ChunkMessagesTest, AReadErrorNamesTheFile) {
  const std::string dir = std::filesystem::temp_directory_path().string();
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  WireMessage message;
  auto n = ReadChunkMessage(fd, dir, v1::UploadRequest::kChunkFieldNumber, kChunk, &message);
  close(fd);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("error reading " + dir), std::string::npos) << n.status();
}

}  // namespace
}  // namespace qopt
