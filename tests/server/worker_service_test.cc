// WorkerService's checkpoints over a real in-process gRPC server and store: PutCheckpoint
// is admitted by the lease's own token only, its bytes are checked against the header and
// capped, the newest replaces the one before, a job queued again after its lease expired
// hands the checkpoint to its next lease (which may read it), and a job that ends drops it.
// Heartbeats' step reports become the step-duration histogram, labelled by step names
// from the registry only.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include "api/services.h"
#include "sha256.h"

namespace qopt::server {
namespace {

using ::testing::HasSubstr;

std::string Sha(const std::string& bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.HexDigest();
}

class WorkerServiceTest : public ::testing::Test {
 protected:
  static constexpr int64_t kLeaseMs = 300;
  static constexpr int64_t kMaxUpload = 4096;

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("qopt_worker_service_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto blobs = BlobStore::Open(dir_.string());
    ASSERT_TRUE(blobs.ok());
    blobs_ = std::move(*blobs);
    auto db = StoreDb::Open((dir_ / "qopt.db").string());
    ASSERT_TRUE(db.ok()) << db.status();
    auto jobs = JobStore::Open(*db, JobStore::Options{kLeaseMs, 3});
    ASSERT_TRUE(jobs.ok());
    jobs_ = std::move(*jobs);
    catalog_ = std::make_unique<Catalog>(*db, blobs_.get(), Catalog::Options());
    {
      std::ofstream auth(dir_ / "auth.json");
      auth << R"({"tenants": {"token-a": "team-a"}, "worker_tokens": ["token-w"]})";
    }
    auto auth = Authenticator::FromFile((dir_ / "auth.json").string());
    ASSERT_TRUE(auth.ok()) << auth.status();
    auth_ = std::make_unique<Authenticator>(*auth);
    ServerLimits limits;
    limits.max_upload_bytes = kMaxUpload;
    service_ = std::make_unique<WorkerServiceImpl>(jobs_.get(), blobs_.get(), catalog_.get(), auth_.get(), &metrics_,
                                                   &watchdog_, limits);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port != 0);
    stub_ = v1::WorkerService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  // A queued job of tenant team-a, with one input blob.
  std::string Submit() {
    v1::Recipe recipe;
    recipe.set_name("qat");
    auto job = jobs_->Submit("team-a", recipe, 0, "", {std::string(64, 'a')});
    EXPECT_TRUE(job.ok()) << job.status();
    return job->id();
  }

  v1::LeaseResponse Lease() {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer token-w");
    v1::LeaseRequest req;
    req.set_worker_id("w");
    req.add_devices("cpu");
    v1::LeaseResponse lease;
    const grpc::Status s = stub_->Lease(&ctx, req, &lease);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return lease;
  }

  // Lets the lease expire and puts its job back in the queue, as the server's loop does.
  void LoseWorker() {
    std::this_thread::sleep_for(std::chrono::milliseconds(kLeaseMs + 100));
    ASSERT_EQ(*jobs_->ExpireLeases(), 1);
  }

  static void Authorize(grpc::ClientContext* ctx, const std::string& lease_token,
                        const std::string& worker_token = "token-w") {
    if (!worker_token.empty()) ctx->AddMetadata("authorization", "Bearer " + worker_token);
    if (!lease_token.empty()) ctx->AddMetadata("qopt-lease-token", lease_token);
  }

  // PutCheckpoint of `bytes` declared as `sha256` and `size` (by default their own).
  grpc::Status Put(const v1::LeaseResponse& lease, const std::string& bytes, const std::string& lease_token,
                   std::string sha256 = "", int64_t size = -1, const std::string& worker_token = "token-w") {
    grpc::ClientContext ctx;
    Authorize(&ctx, lease_token, worker_token);
    v1::Empty empty;
    auto writer = stub_->PutCheckpoint(&ctx, &empty);
    v1::PutCheckpointRequest header;
    header.set_job_id(lease.job_id());
    header.set_lease_id(lease.lease_id());
    header.mutable_header()->set_sha256(sha256.empty() ? Sha(bytes) : sha256);
    header.mutable_header()->set_size(size < 0 ? static_cast<int64_t>(bytes.size()) : size);
    if (writer->Write(header)) {
      for (size_t at = 0; at < bytes.size(); at += 1000) {
        v1::PutCheckpointRequest chunk;
        chunk.set_chunk(bytes.substr(at, 1000));
        if (!writer->Write(chunk)) break;
      }
    }
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status Read(const std::string& lease_token, const std::string& sha256, std::string* bytes) {
    grpc::ClientContext ctx;
    Authorize(&ctx, lease_token);
    v1::ReadBlobRequest req;
    req.set_sha256(sha256);
    auto reader = stub_->ReadBlob(&ctx, req);
    v1::Chunk chunk;
    bytes->clear();
    while (reader->Read(&chunk)) bytes->append(chunk.data());
    return reader->Finish();
  }

  std::string Checkpoint(const std::string& job) { return *jobs_->Checkpoint(job); }

  // (count, sum) of qopt_step_duration_seconds{step="<step>"}; (0, 0) when there is no such series.
  std::pair<uint64_t, double> StepSeconds(const std::string& step) {
    for (const prometheus::MetricFamily& family : metrics_.registry()->Collect()) {
      if (family.name != "qopt_step_duration_seconds") continue;
      for (const prometheus::ClientMetric& m : family.metric) {
        if (m.label.size() == 1 && m.label[0].value == step) {
          return {m.histogram.sample_count, m.histogram.sample_sum};
        }
      }
    }
    return {0, 0.0};
  }

  // The number of qopt_step_duration_seconds series.
  size_t StepSeries() {
    for (const prometheus::MetricFamily& family : metrics_.registry()->Collect()) {
      if (family.name == "qopt_step_duration_seconds") return family.metric.size();
    }
    return 0;
  }

  std::filesystem::path dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<JobStore> jobs_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Authenticator> auth_;
  Metrics metrics_;
  IdleWatchdog watchdog_{std::chrono::seconds(60)};
  std::unique_ptr<WorkerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

TEST_F(WorkerServiceTest, CheckpointIsStoredAndHandedToTheJobsNextLease) {
  const std::string job = Submit();
  const v1::LeaseResponse first = Lease();
  ASSERT_EQ(first.job_id(), job);
  EXPECT_EQ(first.checkpoint_sha256(), "") << "a fresh job has no checkpoint";
  const std::string bytes(3000, 'c');
  const grpc::Status put = Put(first, bytes, first.lease_token());
  ASSERT_TRUE(put.ok()) << put.error_message();
  EXPECT_EQ(Checkpoint(job), Sha(bytes));
  EXPECT_TRUE(blobs_->Exists(Sha(bytes)));
  EXPECT_EQ(*catalog_->UsedBytes("team-a"), 3000) << "the checkpoint counts in the tenant's storage";
  auto events = jobs_->Events("team-a", job, 0);
  ASSERT_TRUE(events.ok());
  EXPECT_THAT(events->back().message(), HasSubstr("checkpoint stored (3000 bytes)"));

  LoseWorker();
  const v1::LeaseResponse second = Lease();
  ASSERT_EQ(second.job_id(), job);
  EXPECT_EQ(second.checkpoint_sha256(), Sha(bytes));
  std::string read;
  const grpc::Status got = Read(second.lease_token(), second.checkpoint_sha256(), &read);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_EQ(read, bytes);
  EXPECT_EQ(Read(first.lease_token(), second.checkpoint_sha256(), &read).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "the lost lease reads nothing more";
  events = jobs_->Events("team-a", job, 0);
  EXPECT_THAT(events->back().message(), HasSubstr("resumes from the job's checkpoint"));
}

TEST_F(WorkerServiceTest, TheNewestCheckpointReplacesTheOneBefore) {
  const std::string job = Submit();
  const v1::LeaseResponse lease = Lease();
  const std::string epoch1(1000, '1'), epoch2(2000, '2');
  ASSERT_TRUE(Put(lease, epoch1, lease.lease_token()).ok());
  ASSERT_TRUE(Put(lease, epoch2, lease.lease_token()).ok());
  EXPECT_EQ(Checkpoint(job), Sha(epoch2));
  EXPECT_FALSE(blobs_->Exists(Sha(epoch1))) << "the replaced checkpoint's file is removed";
  EXPECT_TRUE(blobs_->Exists(Sha(epoch2)));
  EXPECT_EQ(*catalog_->UsedBytes("team-a"), 2000);
  ASSERT_TRUE(Put(lease, epoch2, lease.lease_token()).ok()) << "the same checkpoint again";
  EXPECT_TRUE(blobs_->Exists(Sha(epoch2))) << "storing the same bytes again keeps them";
}

TEST_F(WorkerServiceTest, OnlyTheLeasesOwnLiveTokenStoresACheckpoint) {
  const std::string job = Submit();
  const std::string other_job = Submit();
  const v1::LeaseResponse lease = Lease();
  const v1::LeaseResponse other = Lease();
  ASSERT_EQ(lease.job_id(), job);
  ASSERT_EQ(other.job_id(), other_job);
  const std::string bytes(100, 'x');
  EXPECT_EQ(Put(lease, bytes, "").error_code(), grpc::StatusCode::UNAUTHENTICATED) << "no lease token";
  EXPECT_EQ(Put(lease, bytes, std::string(64, 'f')).error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "a made-up lease token";
  EXPECT_EQ(Put(lease, bytes, lease.lease_id()).error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "the lease id is not its secret";
  EXPECT_EQ(Put(lease, bytes, lease.lease_token(), "", -1, "").error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "no worker token";
  EXPECT_EQ(Put(lease, bytes, lease.lease_token(), "", -1, "token-a").error_code(),
            grpc::StatusCode::UNAUTHENTICATED)
      << "a tenant's token";
  EXPECT_EQ(Put(lease, bytes, other.lease_token()).error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << "another lease's token";
  EXPECT_EQ(Checkpoint(job), "");
  EXPECT_EQ(Checkpoint(other_job), "");

  std::this_thread::sleep_for(std::chrono::milliseconds(kLeaseMs + 100));
  ASSERT_EQ(*jobs_->ExpireLeases(), 2);
  EXPECT_EQ(Put(lease, bytes, lease.lease_token()).error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "an expired lease's token";
  EXPECT_EQ(Checkpoint(job), "");
  EXPECT_FALSE(blobs_->Exists(Sha(bytes))) << "nothing refused is kept";
}

TEST_F(WorkerServiceTest, CheckpointBytesMustMatchTheirHeader) {
  const std::string job = Submit();
  const v1::LeaseResponse lease = Lease();
  const std::string bytes(1500, 'b');
  grpc::Status s = Put(lease, bytes, lease.lease_token(), Sha("other bytes"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("sha256 mismatch"));
  s = Put(lease, bytes, lease.lease_token(), "", 1000);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "more bytes than declared";
  s = Put(lease, bytes, lease.lease_token(), "", 2000);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "fewer bytes than declared";
  s = Put(lease, bytes, lease.lease_token(), "../../etc/passwd");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "not a sha256";
  const std::string huge(kMaxUpload + 1, 'h');
  s = Put(lease, huge, lease.lease_token());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << "larger than --max-upload-bytes";
  EXPECT_EQ(Checkpoint(job), "");
  EXPECT_TRUE(blobs_->ListBlobs().empty());
  EXPECT_EQ(*catalog_->UsedBytes("team-a"), 0);
}

TEST_F(WorkerServiceTest, LeasesReadOnlyTheirOwnJobsCheckpoint) {
  const std::string job = Submit();
  const std::string other_job = Submit();
  const v1::LeaseResponse lease = Lease();
  const v1::LeaseResponse other = Lease();
  ASSERT_EQ(other.job_id(), other_job);
  const std::string bytes(100, 'k');
  ASSERT_TRUE(Put(lease, bytes, lease.lease_token()).ok());
  std::string read;
  EXPECT_EQ(Read(other.lease_token(), Sha(bytes), &read).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Read(lease.lease_token(), Sha(bytes), &read).ok());
  (void)job;
}

TEST_F(WorkerServiceTest, ACompletedJobDropsItsCheckpoint) {
  const std::string job = Submit();
  const v1::LeaseResponse lease = Lease();
  const std::string bytes(700, 'd');
  ASSERT_TRUE(Put(lease, bytes, lease.lease_token()).ok());
  grpc::ClientContext ctx;
  Authorize(&ctx, lease.lease_token());
  v1::CompleteRequest complete;
  complete.set_job_id(job);
  complete.set_lease_id(lease.lease_id());
  complete.set_report_json("{}");
  v1::Empty empty;
  ASSERT_TRUE(stub_->Complete(&ctx, complete, &empty).ok());
  EXPECT_EQ(Checkpoint(job), "");
  EXPECT_EQ(*catalog_->UsedBytes("team-a"), 0);
  auto collected = catalog_->CollectGarbage(60000);
  ASSERT_TRUE(collected.ok());
  EXPECT_EQ(collected->blobs, 1);
  EXPECT_FALSE(blobs_->Exists(Sha(bytes))) << "garbage collection removes the dropped checkpoint";
}

TEST_F(WorkerServiceTest, StepReportsAreTimedByStepAndOnlyKnownStepsNameASeries) {
  Submit();
  const v1::LeaseResponse lease = Lease();
  v1::HeartbeatRequest hb;
  hb.set_job_id(lease.job_id());
  hb.set_lease_id(lease.lease_id());
  hb.set_worker_id("w");
  const auto report = [&](const std::string& step, double seconds) {
    v1::StepReport* r = hb.add_step_reports();
    r->set_step(step);
    r->set_seconds(seconds);
  };
  report("calibrate", 2.5);
  report("analyze", 40);
  report("evil\"} 1\nqopt_jobs 9", 1);
  report("Calibrate", 1);
  report("", 1);
  report("calibrate", std::nan(""));
  report("analyze", -1);
  grpc::ClientContext ctx;
  Authorize(&ctx, lease.lease_token());
  v1::HeartbeatResponse response;
  const grpc::Status s = stub_->Heartbeat(&ctx, hb, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(StepSeconds("calibrate"), std::make_pair(uint64_t{1}, 2.5)) << "a NaN time is not counted";
  EXPECT_EQ(StepSeconds("analyze"), std::make_pair(uint64_t{1}, 40.0)) << "a negative time is not counted";
  EXPECT_EQ(StepSeconds("unknown"), std::make_pair(uint64_t{3}, 3.0)) << "names that are no step";
  EXPECT_EQ(StepSeries(), 3u);

  grpc::ClientContext refused;
  Authorize(&refused, "not-the-lease-token");
  EXPECT_FALSE(stub_->Heartbeat(&refused, hb, &response).ok());
  EXPECT_EQ(StepSeconds("calibrate").first, 1u) << "a refused heartbeat's reports are not counted";
}

}  // namespace
}  // namespace qopt::server
