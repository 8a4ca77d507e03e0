// JobFile: the worker reads what a job's sandboxed process wrote only when it is a plain
// file of the job's own, never through a link the process planted.
#include "runtime/job_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qopt::worker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class JobFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("job_file_test." + std::to_string(getpid()));
    fs::create_directories(dir_ / "out");
    secret_ = (dir_ / "worker_token").string();  // outside the job's folder
    std::ofstream(secret_) << "the worker's secret";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Out(const std::string& name) const { return (dir_ / "out" / name).string(); }
  fs::path dir_;
  std::string secret_;
};

TEST_F(JobFileTest, APlainFileIsHashedAndSentWhole) {
  std::string bytes;
  for (int i = 0; i < (2 << 20) + 4321; ++i) bytes.push_back(static_cast<char>(i * 7 % 253));
  std::ofstream(Out("model.pt"), std::ios::binary) << bytes;
  auto file = JobFile::Open(Out("model.pt"), "artifact model.pt");
  ASSERT_TRUE(file.ok()) << file.status();
  auto digest = (*file)->Digest();
  ASSERT_TRUE(digest.ok()) << digest.status();
  auto expected = Sha256File(Out("model.pt"));
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(digest->sha256, expected->sha256);
  EXPECT_EQ(digest->size, static_cast<int64_t>(bytes.size()));
  std::string sent;
  int chunks = 0;
  (*file)->SendChunks(digest->size, [&](absl::string_view chunk) {
    EXPECT_LE(chunk.size(), size_t{1} << 20);
    sent.append(chunk.data(), chunk.size());
    ++chunks;
    return true;
  });
  EXPECT_EQ(sent, bytes);
  EXPECT_EQ(chunks, 3);
}

TEST_F(JobFileTest, ALinkToAFileOutsideTheJobIsRefused) {
  fs::create_symlink(secret_, Out("model.pt"));
  auto file = JobFile::Open(Out("model.pt"), "artifact model.pt");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("artifact model.pt is a link"));
}

TEST_F(JobFileTest, AHardLinkToAnotherFileIsRefused) {
  // A second name: the process could have linked a file it cannot read itself.
  fs::create_hard_link(secret_, Out("report.json"));
  auto file = JobFile::Open(Out("report.json"), "artifact report.json");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("not a plain file of the job's own"));
}

TEST_F(JobFileTest, AFifoOrAFolderIsRefusedWithoutWaiting) {
  ASSERT_EQ(mkfifo(Out("pipe").c_str(), 0600), 0);
  auto fifo = JobFile::Open(Out("pipe"), "checkpoint");
  ASSERT_FALSE(fifo.ok());
  EXPECT_EQ(fifo.status().code(), absl::StatusCode::kFailedPrecondition);
  fs::create_directories(Out("folder"));
  auto folder = JobFile::Open(Out("folder"), "checkpoint");
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobFileTest, AMissingFileIsNotFound) {
  auto file = JobFile::Open(Out("absent.onnx"), "artifact absent.onnx");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("cannot open the artifact absent.onnx"));
}

}  // namespace
}  // namespace qopt::worker
