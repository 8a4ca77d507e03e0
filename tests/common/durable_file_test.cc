// DurableFileWriter: a received file appears whole under its name, or not at all.
#include "durable_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qopt {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DurableFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("durable_file_test." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string Read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

TEST_F(DurableFileTest, CommitPutsTheWholeFileUnderItsNameWithItsHash) {
  const fs::path path = dir_ / "model.onnx";
  // Larger than the write-behind step, in pieces of odd sizes.
  std::string bytes;
  for (int i = 0; i < (9 << 20) + 12345; ++i) bytes.push_back(static_cast<char>(i * 131 % 251));
  auto file = DurableFileWriter::Create(path.string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_FALSE(fs::exists(path)) << "nothing under the final name before Commit";
  for (size_t at = 0; at < bytes.size(); at += 777777) {
    ASSERT_TRUE((*file)->Append(bytes.substr(at, 777777)).ok());
  }
  const FileDigest digest = (*file)->Digest();
  ASSERT_TRUE((*file)->Commit().ok());
  EXPECT_EQ(digest.size, static_cast<int64_t>(bytes.size()));
  auto on_disk = Sha256File(path.string());
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(digest.sha256, on_disk->sha256);
  EXPECT_EQ(Read(path), bytes);
  file->reset();
  EXPECT_FALSE(fs::exists(dir_ / "model.onnx.partial"));
  EXPECT_TRUE(fs::exists(path)) << "a committed file stays";
}

TEST_F(DurableFileTest, AFileOfManySyncStepsIsWholeAndHashedInOrder) {
  // 70 MiB: the background sync runs twice while pieces arrive, and the hashing thread's
  // queue fills (4 MiB) and drains many times. Pieces differ, so an order mix-up shows.
  const fs::path path = dir_ / "blob.bin";
  auto file = DurableFileWriter::Create(path.string());
  ASSERT_TRUE(file.ok()) << file.status();
  Sha256 expected;
  int64_t size = 0;
  for (int i = 0; i < 70 * 4; ++i) {
    std::string piece(256 << 10, static_cast<char>(i));
    piece[i % piece.size()] = 'x';
    expected.Update(piece);
    size += static_cast<int64_t>(piece.size());
    ASSERT_TRUE((*file)->Append(std::move(piece)).ok());
  }
  const FileDigest digest = (*file)->Digest();
  EXPECT_EQ(digest.sha256, expected.HexDigest());
  EXPECT_EQ(digest.size, size);
  ASSERT_TRUE((*file)->Commit().ok());
  auto on_disk = Sha256File(path.string());
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(on_disk->sha256, digest.sha256);
  EXPECT_EQ(on_disk->size, size);
}

TEST_F(DurableFileTest, PipelinedHashEqualsTheHashOfTheWholeStream) {
  std::string all;
  PipelinedSha256 pipelined;
  for (int i = 0; i < 3000; ++i) {
    std::string piece(1 + (i * 7919) % 9000, static_cast<char>('a' + i % 26));
    all += piece;
    pipelined.Update(std::move(piece));
  }
  pipelined.Update(std::string());  // an empty piece changes nothing
  Sha256 whole;
  whole.Update(all);
  EXPECT_EQ(pipelined.HexDigest(), whole.HexDigest());
}

TEST_F(DurableFileTest, AnAbandonedFileLeavesNothingAndKeepsAnEarlierOne) {
  const fs::path path = dir_ / "report.json";
  { std::ofstream(path) << "earlier download"; }
  {
    auto file = DurableFileWriter::Create(path.string());
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->Append("half of it").ok());
    EXPECT_TRUE(fs::exists(dir_ / "report.json.partial"));
  }  // dropped without Commit, as when the stream fails or the hash does not match
  EXPECT_FALSE(fs::exists(dir_ / "report.json.partial"));
  EXPECT_EQ(Read(path), "earlier download");
}

TEST_F(DurableFileTest, AFolderThatIsNotThereIsNamed) {
  auto file = DurableFileWriter::Create((dir_ / "missing" / "model.pt").string());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("missing/model.pt.partial"));
}

}  // namespace
}  // namespace qopt
