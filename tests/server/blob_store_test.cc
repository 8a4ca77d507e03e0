// The blob store: hash-verified uploads, resume, and no partial blob ever visible.
#include "store/blob_store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace qopt::server {
namespace {

// sha256("hello world")
constexpr char kHello[] = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("qopt_blobs_" + std::to_string(getpid()));
    auto s = BlobStore::Open(dir_.string());
    ASSERT_TRUE(s.ok());
    store_ = std::move(*s);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, UploadPublishesOnlyVerifiedBytes) {
  auto up = store_->Begin(kHello, 11, 0, "t1");
  ASSERT_TRUE(up.ok());
  ASSERT_TRUE((*up)->Write("hello ").ok());
  EXPECT_FALSE(store_->Exists(kHello)) << "partial data must not be visible";
  ASSERT_TRUE((*up)->Write("world").ok());
  ASSERT_TRUE((*up)->Commit().ok());
  EXPECT_TRUE(store_->Exists(kHello));
  EXPECT_EQ(store_->Size(kHello), 11);
  auto hash = Sha256File(store_->Path(kHello));
  ASSERT_TRUE(hash.ok());
  EXPECT_EQ(hash->sha256, kHello);
}

TEST_F(BlobStoreTest, HashMismatchIsRejected) {
  auto up = store_->Begin(kHello, 11, 0, "t1");
  ASSERT_TRUE(up.ok());
  ASSERT_TRUE((*up)->Write("hello WORLD").ok());
  const absl::Status s = (*up)->Commit();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("sha256 mismatch"), std::string::npos);
  EXPECT_FALSE(store_->Exists(kHello));
  EXPECT_EQ(store_->PartialSize(kHello, "t1"), 0);
}

TEST_F(BlobStoreTest, InterruptedUploadResumesFromItsPartialFile) {
  {
    auto up = store_->Begin(kHello, 11, 0, "t1");
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->Write("hello").ok());
  }  // connection lost: no commit
  EXPECT_EQ(store_->PartialSize(kHello, "t1"), 5);
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->Begin(kHello, 11, 3, "t1").status()));
  auto resumed = store_->Begin(kHello, 11, 5, "t1");
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE((*resumed)->Write(" world").ok());
  ASSERT_TRUE((*resumed)->Commit().ok()) << "the hash covers the bytes sent before";
  EXPECT_TRUE(store_->Exists(kHello));
}

TEST_F(BlobStoreTest, RejectsBadNamesAndOversizedWrites) {
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Begin("../etc/passwd", 1, 0, "t1").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Begin(std::string(64, 'G'), 1, 0, "t1").status()));
  auto up = store_->Begin(kHello, 3, 0, "t1");
  ASSERT_TRUE(up.ok());
  EXPECT_TRUE(absl::IsInvalidArgument((*up)->Write("hello")));
}

}  // namespace
}  // namespace qopt::server
