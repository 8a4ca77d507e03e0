// The catalog: per-tenant blob ownership, the storage quota, named records, recipe
// resolution, and freeing storage when records and jobs go away.
#include "store/catalog.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "store/job_store.h"

namespace qopt::server {
namespace {

// sha256("hello world")
constexpr char kHello[] = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("qopt_catalog_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    auto blobs = BlobStore::Open(dir_.string());
    ASSERT_TRUE(blobs.ok());
    blobs_ = std::move(*blobs);
    auto db = StoreDb::Open((dir_ / "qopt.db").string());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *db;
    auto jobs = JobStore::Open(db_, JobStore::Options());
    ASSERT_TRUE(jobs.ok());
    jobs_ = std::move(*jobs);
    catalog_ = std::make_unique<Catalog>(db_, blobs_.get(), Catalog::Options());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Uploads `bytes` as `tenant` the way the BlobService does.
  absl::Status Upload(const std::string& tenant, const std::string& bytes, std::string* sha = nullptr) {
    Sha256 h;
    h.Update(bytes);
    const std::string digest = h.HexDigest();
    if (sha) *sha = digest;
    auto up = blobs_->Begin(digest, static_cast<int64_t>(bytes.size()), 0, UploaderKey(tenant));
    if (!up.ok()) return up.status();
    if (absl::Status s = (*up)->Write(bytes); !s.ok()) return s;
    if (absl::Status s = (*up)->Seal(); !s.ok()) return s;
    return catalog_->PublishUpload(tenant, **up, digest);
  }

  v1::Dataset Record(const std::string& name, const std::string& sha) {
    v1::Dataset r;
    r.set_name(name);
    r.set_sha256(sha);
    return r;
  }

  std::filesystem::path dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::shared_ptr<StoreDb> db_;
  std::unique_ptr<JobStore> jobs_;
  std::unique_ptr<Catalog> catalog_;
};

TEST_F(CatalogTest, BlobsBelongToTheTenantsThatUploadedThem) {
  ASSERT_TRUE(Upload("alice", "hello world").ok());
  EXPECT_TRUE(*catalog_->Owns("alice", kHello));
  EXPECT_FALSE(*catalog_->Owns("bob", kHello)) << "a hash alone must not grant access";
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 11);
  EXPECT_EQ(*catalog_->UsedBytes("bob"), 0);
  // Bob proves he holds the bytes by sending them; both now own the one file.
  ASSERT_TRUE(Upload("bob", "hello world").ok());
  EXPECT_TRUE(*catalog_->Owns("bob", kHello));
  EXPECT_EQ(*catalog_->UsedBytes("bob"), 11);
}

TEST_F(CatalogTest, QuotaRejectsUploadsThatDoNotFit) {
  catalog_ = std::make_unique<Catalog>(db_, blobs_.get(), Catalog::Options{/*quota_bytes=*/30});
  ASSERT_TRUE(Upload("alice", "hello world").ok());                 // 11
  ASSERT_TRUE(Upload("alice", "second blob, 19 b.").ok());          // 29 of 30
  std::string sha;
  const absl::Status s = Upload("alice", "third", &sha);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_NE(s.message().find("quota"), std::string::npos) << s;
  EXPECT_FALSE(blobs_->Exists(sha)) << "a rejected upload must not be published";
  EXPECT_EQ(blobs_->PartialSize(sha, UploaderKey("alice")), 0) << "nor left half-written";
  EXPECT_TRUE(absl::IsResourceExhausted(catalog_->CheckQuota("alice", 2)));
  EXPECT_TRUE(catalog_->CheckQuota("bob", 30).ok()) << "quotas are per tenant";
  // The same bytes again cost nothing: usage counts distinct blobs.
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 29);
}

TEST_F(CatalogTest, RecordsAreNamedPerTenantAndNeedOwnedBlobs) {
  std::string sha, other;
  ASSERT_TRUE(Upload("alice", "hello world", &sha).ok());
  ASSERT_TRUE(Upload("alice", "other bytes", &other).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(
      catalog_->PutRecord("alice", RecordKind::kModel, Record("../x", sha), false).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      catalog_->PutRecord("bob", RecordKind::kModel, Record("m", sha), false).status()))
      << "bob never uploaded those bytes";

  auto created = catalog_->PutRecord("alice", RecordKind::kModel, Record("resnet", sha), false);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->size(), 11);
  EXPECT_TRUE(catalog_->PutRecord("alice", RecordKind::kModel, Record("resnet", sha), false).ok())
      << "creating the same record again is idempotent";
  EXPECT_TRUE(absl::IsAlreadyExists(
      catalog_->PutRecord("alice", RecordKind::kModel, Record("resnet", other), false).status()));
  EXPECT_TRUE(catalog_->PutRecord("alice", RecordKind::kModel, Record("resnet", other), true).ok());
  EXPECT_EQ(catalog_->GetRecord("alice", RecordKind::kModel, "resnet")->sha256(), other);

  EXPECT_TRUE(absl::IsNotFound(catalog_->GetRecord("bob", RecordKind::kModel, "resnet").status()));
  EXPECT_TRUE(absl::IsNotFound(catalog_->GetRecord("alice", RecordKind::kDataset, "resnet").status()))
      << "models and datasets are separate namespaces";
}

TEST_F(CatalogTest, ListingPagesByName) {
  std::string sha;
  ASSERT_TRUE(Upload("alice", "hello world", &sha).ok());
  for (const char* name : {"c", "a", "e", "b", "d"}) {
    ASSERT_TRUE(catalog_->PutRecord("alice", RecordKind::kDataset, Record(name, sha), false).ok());
  }
  std::vector<std::string> names;
  std::string token;
  int pages = 0;
  do {
    auto page = catalog_->ListRecords("alice", RecordKind::kDataset, 2, token);
    ASSERT_TRUE(page.ok());
    for (const auto& r : page->first) names.push_back(r.name());
    token = page->second;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(pages, 3);
  EXPECT_TRUE(catalog_->ListRecords("bob", RecordKind::kDataset, 0, "")->first.empty());
}

TEST_F(CatalogTest, RecipesResolveNamesAndOnlyReachOwnBlobs) {
  std::string model, data, labels;
  ASSERT_TRUE(Upload("alice", "model bytes", &model).ok());
  ASSERT_TRUE(Upload("alice", "data bytes", &data).ok());
  ASSERT_TRUE(Upload("alice", "label bytes", &labels).ok());
  ASSERT_TRUE(catalog_->PutRecord("alice", RecordKind::kModel, Record("net", model), false).ok());
  v1::Dataset set = Record("fmnist", data);
  set.set_labels_sha256(labels);
  set.set_format("idx");
  ASSERT_TRUE(catalog_->PutRecord("alice", RecordKind::kDataset, set, false).ok());

  v1::Recipe recipe;
  recipe.mutable_model()->set_name("net");
  recipe.mutable_calibration_data()->set_name("fmnist");
  recipe.mutable_evaluation_data()->set_name("fmnist");
  recipe.mutable_evaluation_data()->set_labels_path(data);  // explicit fields win
  ASSERT_TRUE(catalog_->ResolveRecipe("alice", &recipe).ok());
  EXPECT_EQ(recipe.model().path(), model);
  EXPECT_EQ(recipe.calibration_data().path(), data);
  EXPECT_EQ(recipe.calibration_data().labels_path(), labels);
  EXPECT_EQ(recipe.calibration_data().format(), "idx");
  EXPECT_EQ(recipe.evaluation_data().labels_path(), data);

  // A training step's data resolves the same way.
  v1::Recipe train;
  train.mutable_model()->set_path(model);
  train.add_steps()->mutable_calibrate();
  train.add_steps()->mutable_qat()->mutable_data()->set_name("fmnist");
  ASSERT_TRUE(catalog_->ResolveRecipe("alice", &train).ok());
  EXPECT_EQ(train.steps(1).qat().data().path(), data);
  EXPECT_EQ(train.steps(1).qat().data().labels_path(), labels);
  EXPECT_EQ(train.steps(1).qat().data().format(), "idx");
  train.mutable_steps(1)->mutable_qat()->mutable_data()->set_name("nope");
  const absl::Status missing = catalog_->ResolveRecipe("alice", &train);
  EXPECT_TRUE(absl::IsInvalidArgument(missing)) << "name and path both set: " << missing;
  EXPECT_NE(std::string(missing.message()).find("steps[1].qat.data"), std::string::npos) << missing;
  v1::Recipe tune;
  tune.mutable_model()->set_path(model);
  tune.add_steps()->mutable_fine_tune()->mutable_data()->set_name("fmnist");
  ASSERT_TRUE(catalog_->ResolveRecipe("alice", &tune).ok());
  EXPECT_EQ(tune.steps(0).fine_tune().data().path(), data);
  EXPECT_EQ(tune.steps(0).fine_tune().data().labels_path(), labels);
  // ... and so does data nested deeper in a step's options.
  v1::Recipe nested;
  nested.mutable_model()->set_path(model);
  nested.add_steps()->mutable_spatial_svd()->mutable_ratios()->mutable_data()->set_name("fmnist");
  ASSERT_TRUE(catalog_->ResolveRecipe("alice", &nested).ok());
  EXPECT_EQ(nested.steps(0).spatial_svd().ratios().data().path(), data);

  v1::Recipe both;
  both.mutable_model()->set_name("net");
  both.mutable_model()->set_path(model);
  EXPECT_TRUE(absl::IsInvalidArgument(catalog_->ResolveRecipe("alice", &both)));

  v1::Recipe foreign;
  foreign.mutable_model()->set_path(model);
  const absl::Status s = catalog_->ResolveRecipe("bob", &foreign);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  v1::Recipe unknown;
  unknown.mutable_model()->set_name("net");
  EXPECT_TRUE(absl::IsNotFound(catalog_->ResolveRecipe("bob", &unknown)));
  v1::Recipe config;
  config.mutable_model()->set_path(model);
  config.mutable_quantization()->set_config_path("not-a-hash");
  EXPECT_TRUE(absl::IsInvalidArgument(catalog_->ResolveRecipe("alice", &config)));
}

TEST_F(CatalogTest, DeletingRecordsAndJobsFreesStorage) {
  std::string model;
  ASSERT_TRUE(Upload("alice", "model bytes", &model).ok());
  ASSERT_TRUE(Upload("bob", "hello world").ok());
  ASSERT_TRUE(Upload("alice", "hello world").ok());
  ASSERT_TRUE(catalog_->PutRecord("alice", RecordKind::kModel, Record("net", model), false).ok());
  ASSERT_TRUE(catalog_->PutRecord("alice", RecordKind::kModel, Record("greeting", kHello), false).ok());

  v1::Recipe recipe;
  recipe.mutable_model()->set_path(model);
  auto job = jobs_->Submit("alice", recipe, 0, "", {model});
  ASSERT_TRUE(job.ok());

  // The job still reads the model: deleting the record keeps the blob.
  ASSERT_TRUE(catalog_->DeleteRecord("alice", RecordKind::kModel, "net").ok());
  EXPECT_TRUE(blobs_->Exists(model));
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 22);
  EXPECT_TRUE(absl::IsNotFound(catalog_->DeleteRecord("alice", RecordKind::kModel, "net")));

  EXPECT_TRUE(absl::IsFailedPrecondition(jobs_->Delete("alice", job->id()).status()))
      << "a queued job cannot be deleted";
  EXPECT_TRUE(absl::IsNotFound(jobs_->Delete("bob", job->id()).status()));
  ASSERT_TRUE(jobs_->Cancel("alice", job->id()).ok());
  auto released = jobs_->Delete("alice", job->id());
  ASSERT_TRUE(released.ok()) << released.status();
  ASSERT_TRUE(catalog_->Release("alice", *released).ok());
  EXPECT_FALSE(blobs_->Exists(model)) << "nothing refers to the model any more";
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 11);
  EXPECT_TRUE(absl::IsNotFound(jobs_->Get("alice", job->id()).status()));

  // Bob still holds "hello world": alice letting go keeps the file.
  ASSERT_TRUE(catalog_->DeleteRecord("alice", RecordKind::kModel, "greeting").ok());
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 0);
  EXPECT_TRUE(blobs_->Exists(kHello));
  EXPECT_TRUE(*catalog_->Owns("bob", kHello));
}

// Issue 11: interrupted uploads hold disk, so they count against the quota until they
// expire; garbage collection removes them and blobs nothing refers to.
TEST_F(CatalogTest, PartialUploadsCountUntilTheyExpire) {
  catalog_ = std::make_unique<Catalog>(db_, blobs_.get(), Catalog::Options{/*quota_bytes=*/20});
  {
    auto up = blobs_->Begin(kHello, 11, 0, UploaderKey("alice"));
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->Write("hello").ok());
  }  // the stream broke: the part stays for resuming
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 5);
  EXPECT_EQ(*catalog_->UsedBytes("bob"), 0);
  EXPECT_TRUE(absl::IsResourceExhausted(catalog_->CheckQuota("alice", 16)));
  EXPECT_TRUE(catalog_->CheckQuota("alice", 15).ok());

  auto kept = catalog_->CollectGarbage(/*part_max_age_ms=*/60000);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->parts, 0) << "a fresh part is kept";
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  auto collected = catalog_->CollectGarbage(/*part_max_age_ms=*/10);
  ASSERT_TRUE(collected.ok());
  EXPECT_EQ(collected->parts, 1);
  EXPECT_EQ(collected->part_bytes, 5);
  EXPECT_EQ(*catalog_->UsedBytes("alice"), 0);
}

TEST_F(CatalogTest, GarbageCollectionRemovesOnlyUnreferencedBlobs) {
  ASSERT_TRUE(Upload("alice", "hello world").ok());
  // A blob file nothing refers to, as a crash between publish and record would leave.
  auto orphan = blobs_->Begin(std::string("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
                              6, 0, "lost");
  ASSERT_TRUE(orphan.ok());
  ASSERT_TRUE((*orphan)->Write("hello\n").ok());
  ASSERT_TRUE((*orphan)->Commit().ok());
  auto collected = catalog_->CollectGarbage(60000);
  ASSERT_TRUE(collected.ok()) << collected.status();
  EXPECT_EQ(collected->blobs, 1);
  EXPECT_EQ(collected->blob_bytes, 6);
  EXPECT_FALSE(blobs_->Exists("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"));
  EXPECT_TRUE(blobs_->Exists(kHello)) << "alice's blob is referenced";
}

TEST_F(CatalogTest, SchemaMigratesOnceAcrossReopens) {
  jobs_.reset();
  catalog_.reset();
  db_.reset();
  auto again = StoreDb::Open((dir_ / "qopt.db").string());
  ASSERT_TRUE(again.ok()) << again.status();
  auto st = (*again)->db()->Prepare("PRAGMA user_version");
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(*st->Step());
  EXPECT_EQ(st->Int(0), 6);
}

}  // namespace
}  // namespace qopt::server
