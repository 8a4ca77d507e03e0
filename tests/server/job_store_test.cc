// The job store: queue order, idempotent submit, leases and their expiry, cancellation,
// tenant isolation, resumable events and training checkpoints, on a real SQLite file.
#include "store/job_store.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qopt::server {
namespace {

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("qopt_store_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen(JobStore::Options o = {200, 2}) {
    store_.reset();
    auto s = JobStore::Open((dir_ / "jobs.db").string(), o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  v1::Recipe Recipe(const std::string& name) {
    v1::Recipe r;
    r.set_name(name);
    return r;
  }
  std::filesystem::path dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreTest, SubmitIsIdempotentByRequestId) {
  auto a = store_->Submit("t", Recipe("a"), 0, "req-1");
  auto b = store_->Submit("t", Recipe("b"), 0, "req-1");
  auto c = store_->Submit("other", Recipe("c"), 0, "req-1");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->id(), b->id());
  EXPECT_EQ(b->recipe().name(), "a");
  EXPECT_NE(a->id(), c->id()) << "request ids are per tenant";
  EXPECT_EQ(a->state(), v1::QUEUED);
}

TEST_F(JobStoreTest, LeasesByPriorityThenAge) {
  auto low = store_->Submit("t", Recipe("low"), 0, "");
  auto high = store_->Submit("t", Recipe("high"), 5, "");
  auto later = store_->Submit("t", Recipe("later"), 0, "");
  auto first = store_->Lease("w", {"cpu"}, 0);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->job_id, high->id());
  EXPECT_EQ(store_->Lease("w", {"cpu"}, 0)->job_id, low->id());
  EXPECT_EQ(store_->Lease("w", {"cpu"}, 0)->job_id, later->id());
  EXPECT_TRUE(absl::IsNotFound(store_->Lease("w", {"cpu"}, 50).status()));
}

TEST_F(JobStoreTest, LongPollWakesOnSubmit) {
  std::thread submitter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    store_->Submit("t", Recipe("x"), 0, "").IgnoreError();
  });
  const auto start = std::chrono::steady_clock::now();
  auto lease = store_->Lease("w", {"cpu"}, 5000);
  submitter.join();
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
}

TEST_F(JobStoreTest, ExpiredLeaseRequeuesThenFails) {
  auto job = store_->Submit("t", Recipe("x"), 0, "");
  ASSERT_TRUE(store_->Lease("w1", {"cpu"}, 0).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(*store_->ExpireLeases(), 1);
  EXPECT_EQ(store_->Get("t", job->id())->state(), v1::QUEUED);
  auto second = store_->Lease("w2", {"cpu"}, 0);
  ASSERT_TRUE(second.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(*store_->ExpireLeases(), 1);
  auto failed = store_->Get("t", job->id());
  EXPECT_EQ(failed->state(), v1::FAILED) << "max_attempts is 2";
  EXPECT_THAT(failed->error(), ::testing::HasSubstr("lease expired"));
  // The stale worker can no longer report.
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->Complete(job->id(), second->lease_id, "{}")));
}

TEST_F(JobStoreTest, HeartbeatsExtendTheLeaseAndCarryCancellation) {
  auto job = store_->Submit("t", Recipe("x"), 0, "");
  auto lease = store_->Lease("w", {"cpu"}, 0);
  v1::HeartbeatRequest hb;
  hb.set_job_id(job->id());
  hb.set_lease_id(lease->lease_id);
  hb.set_stage("calibrate");
  hb.set_progress(0.5);
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    auto r = store_->Heartbeat(hb);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->first);
    EXPECT_EQ(*store_->ExpireLeases(), 0);
  }
  EXPECT_EQ(store_->Get("t", job->id())->progress(), 0.5);
  ASSERT_TRUE(store_->Cancel("t", job->id()).ok());
  auto r = store_->Heartbeat(hb);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->first);
  EXPECT_EQ(store_->Get("t", job->id())->state(), v1::CANCELLED);
}

TEST_F(JobStoreTest, HeartbeatStepReportsBecomeEventsInOrder) {
  auto job = store_->Submit("t", Recipe("x"), 0, "");
  auto lease = store_->Lease("w", {"cpu"}, 0);
  v1::HeartbeatRequest hb;
  hb.set_job_id(job->id());
  hb.set_lease_id(lease->lease_id);
  hb.add_log_lines("calibrate: 4 batches");
  for (const char* step : {"calibrate", "evaluate"}) {
    v1::StepReport* part = hb.add_step_reports();
    part->set_step(step);
    part->set_index(hb.step_reports_size());
  }
  (*hb.mutable_step_reports(1)->mutable_figures())["top1"] = 0.9;
  (*hb.mutable_metrics())["top1"] = 0.9;
  ASSERT_TRUE(store_->Heartbeat(hb).ok());
  auto events = store_->Events("t", job->id(), 0);
  ASSERT_TRUE(events.ok());
  std::vector<std::string> steps;
  for (const v1::JobEvent& e : *events) {
    if (e.has_step_report()) steps.push_back(e.step_report().step());
  }
  EXPECT_EQ(steps, (std::vector<std::string>{"calibrate", "evaluate"}));
  EXPECT_EQ(events->at(events->size() - 2).step_report().figures().at("top1"), 0.9);
  EXPECT_EQ(events->back().metrics().at("top1"), 0.9) << "the progress event keeps the figures";
  EXPECT_FALSE(events->back().has_step_report());
}

TEST_F(JobStoreTest, CancelledJobWhoseWorkerDiedEndsCancelled) {
  auto job = store_->Submit("t", Recipe("x"), 0, "");
  ASSERT_TRUE(store_->Lease("w", {"cpu"}, 0).ok());
  ASSERT_TRUE(store_->Cancel("t", job->id()).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(*store_->ExpireLeases(), 1);
  EXPECT_EQ(store_->Get("t", job->id())->state(), v1::CANCELLED);
}

TEST_F(JobStoreTest, TenantsSeeOnlyTheirJobs) {
  auto job = store_->Submit("a", Recipe("x"), 0, "");
  EXPECT_TRUE(absl::IsNotFound(store_->Get("b", job->id()).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->Cancel("b", job->id()).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->Events("b", job->id(), 0).status()));
  EXPECT_EQ(store_->List("b", {}, 10, "")->jobs_size(), 0);
  EXPECT_EQ(store_->List("a", {}, 10, "")->jobs_size(), 1);
}

TEST_F(JobStoreTest, EventsResumeFromASequenceAndSurviveRestart) {
  auto job = store_->Submit("t", Recipe("x"), 0, "");
  auto lease = store_->Lease("w", {"cpu"}, 0);
  ASSERT_TRUE(store_->Complete(job->id(), lease->lease_id, R"({"ok": true})").ok());
  auto all = store_->Events("t", job->id(), 0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);  // queued, leased, succeeded
  for (size_t i = 0; i < all->size(); ++i) EXPECT_EQ((*all)[i].sequence(), static_cast<int64_t>(i + 1));
  Reopen();
  auto tail = store_->Events("t", job->id(), 2);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 1u);
  EXPECT_EQ((*tail)[0].state(), v1::SUCCEEDED);
  EXPECT_EQ(*store_->Report("t", job->id()), R"({"ok": true})");
}

TEST_F(JobStoreTest, ListPagesAndFilters) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store_->Submit("t", Recipe("x"), 0, "").ok());
  ASSERT_TRUE(store_->Lease("w", {"cpu"}, 0).ok());
  auto page = store_->List("t", {}, 2, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs_size(), 2);
  int seen = page->jobs_size();
  while (!page->next_page_token().empty()) {
    page = store_->List("t", {}, 2, page->next_page_token());
    seen += page->jobs_size();
  }
  EXPECT_EQ(seen, 5);
  EXPECT_EQ(store_->List("t", {v1::RUNNING}, 10, "")->jobs_size(), 1);
  EXPECT_EQ(store_->List("t", {v1::QUEUED}, 10, "")->jobs_size(), 4);
  EXPECT_EQ(store_->List("t", {v1::QUEUED, v1::RUNNING}, 10, "")->jobs_size(), 5);
  EXPECT_EQ(store_->List("t", {v1::SUCCEEDED, v1::FAILED}, 10, "")->jobs_size(), 0);
}

// Issue 16: a listing says what each job did and how it went without reading reports.
TEST_F(JobStoreTest, AFinishedJobCarriesItsTechniqueTimesAndMetrics) {
  v1::Recipe recipe = Recipe("w8a8");
  recipe.add_steps()->mutable_fold_batch_norm();
  recipe.add_steps()->mutable_calibrate();
  recipe.add_steps()->mutable_evaluate();
  auto job = store_->Submit("t", recipe, 0, "");
  EXPECT_EQ(job->technique(), "fold_batch_norm+calibrate");
  EXPECT_EQ(job->started_unix_ms(), 0) << "a queued job never ran";
  auto lease = store_->Lease("w", {"cpu"}, 0);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(store_->Complete(job->id(), lease->lease_id,
                               R"({"recipe": "w8a8", "steps": [{"step": "evaluate", "figures": {"top1": 0.5}}],
                                   "metrics": {"fp32_top1": 0.9225, "top1": 0.9213, "output_sqnr_db": "Infinity"}})")
                  .ok());
  auto done = store_->Get("t", job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_GE(done->started_unix_ms(), done->created_unix_ms());
  EXPECT_LE(done->started_unix_ms(), done->updated_unix_ms());
  EXPECT_THAT(done->metrics(), ::testing::UnorderedElementsAre(::testing::Pair("fp32_top1", 0.9225),
                                                               ::testing::Pair("top1", 0.9213),
                                                               ::testing::Pair("output_sqnr_db", INFINITY)));
  auto listed = store_->List("t", {v1::SUCCEEDED}, 10, "");
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).metrics().at("top1"), 0.9213);

  // A report that is not JSON keeps no metrics, and the job still completes.
  auto odd = store_->Submit("t", recipe, 0, "");
  auto odd_lease = store_->Lease("w", {"cpu"}, 0);
  ASSERT_TRUE(store_->Complete(odd->id(), odd_lease->lease_id, "not json").ok());
  EXPECT_TRUE(store_->Get("t", odd->id())->metrics().empty());
}

TEST_F(JobStoreTest, AFailedJobShowsTheFailureNotItsLastStage) {
  auto job = store_->Submit("t", Recipe("bad"), 0, "");
  auto lease = store_->Lease("w", {"cpu"}, 0);
  v1::HeartbeatRequest hb;
  hb.set_job_id(job->id());
  hb.set_lease_id(lease->lease_id);
  hb.set_stage("starting");
  ASSERT_TRUE(store_->Heartbeat(hb).ok());
  ASSERT_TRUE(store_->Fail(job->id(), lease->lease_id, "model.pt is not a TorchScript model\nat load").ok());
  auto failed = store_->Get("t", job->id());
  EXPECT_EQ(failed->state(), v1::FAILED);
  EXPECT_EQ(failed->stage(), "failed");
  EXPECT_EQ(failed->error(), "model.pt is not a TorchScript model\nat load");
  EXPECT_TRUE(failed->metrics().empty());
}

TEST_F(JobStoreTest, JobsThatSucceededBeforeGainTheirMetrics) {
  // A database as schema version 5 left it, with a job that succeeded.
  auto job = store_->Submit("t", Recipe("old"), 0, "");
  auto lease = store_->Lease("w", {"cpu"}, 0);
  ASSERT_TRUE(store_->Complete(job->id(), lease->lease_id, R"({"metrics": {"top1": 0.75}})").ok());
  store_.reset();
  {
    auto db = Database::Open((dir_ / "jobs.db").string());
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("ALTER TABLE jobs DROP COLUMN metrics; PRAGMA user_version = 5").ok());
  }
  Reopen();
  EXPECT_THAT(store_->Get("t", job->id())->metrics(), ::testing::ElementsAre(::testing::Pair("top1", 0.75)));
}

// Issue 11: a tenant with a long queue cannot starve another; each lease is fair share
// first (fewest running jobs), then priority, then age.
TEST_F(JobStoreTest, LeasesFairlyBetweenTenants) {
  std::vector<std::string> busy;
  for (int i = 0; i < 20; ++i) busy.push_back(store_->Submit("busy", Recipe("long"), 50, "")->id());
  ASSERT_EQ(store_->Lease("w1", {"cpu"}, 0)->job_id, busy[0]);
  ASSERT_EQ(store_->Lease("w2", {"cpu"}, 0)->job_id, busy[1]);
  auto other = store_->Submit("other", Recipe("short"), 0, "");
  EXPECT_EQ(store_->Lease("w3", {"cpu"}, 0)->job_id, other->id())
      << "the next free slot goes to the tenant with no running job, despite its lower priority";
  EXPECT_EQ(store_->Lease("w4", {"cpu"}, 0)->job_id, busy[2]);
}

TEST_F(JobStoreTest, TenantsRunAtMostTheirLimit) {
  Reopen({200, 2, /*max_running_per_tenant=*/1});
  auto a1 = store_->Submit("a", Recipe("x"), 0, "");
  auto a2 = store_->Submit("a", Recipe("x"), 0, "");
  ASSERT_EQ(store_->Lease("w1", {"cpu"}, 0)->job_id, a1->id());
  EXPECT_TRUE(absl::IsNotFound(store_->Lease("w2", {"cpu"}, 0).status())) << "a is at its limit";
  auto b = store_->Submit("b", Recipe("x"), 0, "");
  EXPECT_EQ(store_->Lease("w2", {"cpu"}, 0)->job_id, b->id());
  (void)a2;
}

TEST_F(JobStoreTest, CudaJobsWaitForACudaWorker) {
  v1::Recipe gpu = Recipe("gpu");
  gpu.set_device("cuda:0");
  auto job = store_->Submit("t", gpu, 0, "");
  EXPECT_EQ(job->stage(), "waiting for a worker with cuda");
  EXPECT_TRUE(absl::IsNotFound(store_->Lease("cpu-worker", {"cpu"}, 0).status()));
  auto cpu_job = store_->Submit("t", Recipe("cpu"), 0, "");
  EXPECT_EQ(store_->Lease("cpu-worker", {"cpu"}, 0)->job_id, cpu_job->id()) << "the cpu job does not wait";
  auto gpu_lease = store_->Lease("gpu-worker", {"cpu", "cuda"}, 0);
  ASSERT_TRUE(gpu_lease.ok());
  EXPECT_EQ(gpu_lease->job_id, job->id());
}

TEST_F(JobStoreTest, LeaseTokensNameTheirLeaseOnly) {
  auto job = store_->Submit("t", Recipe("x"), 0, "", {std::string(64, 'a')});
  auto lease = store_->Lease("w", {"cpu"}, 0);
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->token.size(), 64u);
  auto scope = store_->LeaseOfToken(lease->token);
  ASSERT_TRUE(scope.ok()) << scope.status();
  EXPECT_EQ(scope->job_id, job->id());
  EXPECT_EQ(scope->lease_id, lease->lease_id);
  EXPECT_TRUE(absl::IsUnauthenticated(store_->LeaseOfToken("").status()));
  EXPECT_TRUE(absl::IsUnauthenticated(store_->LeaseOfToken(lease->lease_id).status()))
      << "the lease id is not the secret";
  EXPECT_TRUE(*store_->Reads(job->id(), std::string(64, 'a')));
  EXPECT_FALSE(*store_->Reads(job->id(), std::string(64, 'b')));
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  ASSERT_EQ(*store_->ExpireLeases(), 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->LeaseOfToken(lease->token).status()))
      << "a token outlives its lease only to say so";
}

TEST_F(JobStoreTest, JobsPastTheirTimeLimitFail) {
  Reopen({10000, 2, 0, /*max_job_ms=*/60000});
  v1::Recipe quick = Recipe("quick");
  quick.set_time_limit_seconds(1);
  auto limited = store_->Submit("t", quick, 0, "");
  v1::Recipe greedy = Recipe("greedy");
  greedy.set_time_limit_seconds(1000000);
  auto capped = store_->Submit("t", greedy, 0, "");
  ASSERT_TRUE(store_->Lease("w", {"cpu"}, 0).ok());
  ASSERT_TRUE(store_->Lease("w", {"cpu"}, 0).ok());
  EXPECT_EQ(*store_->EnforceTimeLimits(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_EQ(*store_->EnforceTimeLimits(), 1);
  auto job = store_->Get("t", limited->id());
  EXPECT_EQ(job->state(), v1::FAILED);
  EXPECT_THAT(job->error(), ::testing::HasSubstr("time limit of 1 s exceeded"));
  EXPECT_EQ(store_->Get("t", capped->id())->state(), v1::RUNNING) << "capped at 60 s, still running";
}

v1::CheckpointHeader CheckpointOf(char c) {
  v1::CheckpointHeader header;
  header.set_sha256(std::string(64, c));
  header.set_size(10);
  return header;
}

TEST_F(JobStoreTest, ACheckpointOutlivesALostLeaseAndIsReadByTheNext) {
  auto job = store_->Submit("t", Recipe("x"), 0, "");
  auto first = store_->Lease("w1", {"cpu"}, 0);
  EXPECT_EQ(first->checkpoint_sha256, "");
  EXPECT_FALSE(*store_->Reads(job->id(), std::string(64, 'c')));
  EXPECT_EQ(*store_->SetCheckpoint(job->id(), first->lease_id, CheckpointOf('c')), "") << "nothing replaced";
  EXPECT_TRUE(*store_->Reads(job->id(), std::string(64, 'c')));
  EXPECT_EQ(*store_->SetCheckpoint(job->id(), first->lease_id, CheckpointOf('d')), std::string(64, 'c'))
      << "the replaced checkpoint is returned, to be removed";
  EXPECT_FALSE(*store_->Reads(job->id(), std::string(64, 'c')));
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  ASSERT_EQ(*store_->ExpireLeases(), 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->SetCheckpoint(job->id(), first->lease_id, CheckpointOf('e')).status()))
      << "a lost lease stores no checkpoint";
  EXPECT_EQ(*store_->Checkpoint(job->id()), std::string(64, 'd')) << "queued again, it keeps its checkpoint";
  auto second = store_->Lease("w2", {"cpu"}, 0);
  EXPECT_EQ(second->checkpoint_sha256, std::string(64, 'd'));
}

TEST_F(JobStoreTest, EveryFinalStateDropsTheCheckpoint) {
  Reopen({200, 1, 0, /*max_job_ms=*/1000});
  std::vector<std::pair<std::string, std::function<void(const std::string&, const std::string&)>>> ends = {
      {"complete", [&](const std::string& id, const std::string& lease) { ASSERT_TRUE(store_->Complete(id, lease, "{}").ok()); }},
      {"fail", [&](const std::string& id, const std::string& lease) { ASSERT_TRUE(store_->Fail(id, lease, "x").ok()); }},
      {"cancel", [&](const std::string& id, const std::string& lease) {
         ASSERT_TRUE(store_->Cancel("t", id).ok());
         v1::HeartbeatRequest hb;
         hb.set_job_id(id);
         hb.set_lease_id(lease);
         ASSERT_TRUE(store_->Heartbeat(hb)->first);
       }},
      {"lease expired past max_attempts", [&](const std::string&, const std::string&) {
         std::this_thread::sleep_for(std::chrono::milliseconds(250));
         ASSERT_EQ(*store_->ExpireLeases(), 1);
       }},
      {"time limit", [&](const std::string& id, const std::string& lease) {
         v1::HeartbeatRequest hb;
         hb.set_job_id(id);
         hb.set_lease_id(lease);
         for (int i = 0; i < 8; ++i) {
           std::this_thread::sleep_for(std::chrono::milliseconds(150));
           ASSERT_TRUE(store_->Heartbeat(hb).ok());
         }
         ASSERT_EQ(*store_->EnforceTimeLimits(), 1);
       }},
  };
  for (const auto& [how, end] : ends) {
    auto job = store_->Submit("t", Recipe(how), 0, "");
    auto lease = store_->Lease("w", {"cpu"}, 0);
    ASSERT_EQ(lease->job_id, job->id());
    ASSERT_TRUE(store_->SetCheckpoint(job->id(), lease->lease_id, CheckpointOf('c')).ok());
    end(job->id(), lease->lease_id);
    EXPECT_TRUE(IsFinal(store_->Get("t", job->id())->state())) << how;
    EXPECT_EQ(*store_->Checkpoint(job->id()), "") << how;
    EXPECT_FALSE(*store_->Reads(job->id(), std::string(64, 'c'))) << how;
  }
}

TEST_F(JobStoreTest, AnExistingDatabaseGainsCheckpoints) {
  // A database as schema version 4 left it, with a job queued.
  auto job = store_->Submit("t", Recipe("old"), 0, "");
  store_.reset();
  {
    auto db = Database::Open((dir_ / "jobs.db").string());
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("DROP TRIGGER jobs_end_drops_checkpoint; DROP INDEX jobs_checkpoint; "
                            "ALTER TABLE jobs DROP COLUMN checkpoint_sha256; "
                            "ALTER TABLE jobs DROP COLUMN checkpoint_size; ALTER TABLE jobs DROP COLUMN metrics; "
                            "PRAGMA user_version = 4")
                    .ok());
  }
  Reopen();
  auto lease = store_->Lease("w", {"cpu"}, 0);
  ASSERT_EQ(lease->job_id, job->id());
  EXPECT_EQ(lease->checkpoint_sha256, "");
  ASSERT_TRUE(store_->SetCheckpoint(job->id(), lease->lease_id, CheckpointOf('c')).ok());
  ASSERT_TRUE(store_->Complete(job->id(), lease->lease_id, "{}").ok());
  EXPECT_EQ(*store_->Checkpoint(job->id()), "") << "the trigger came with the migration";
}

}  // namespace
}  // namespace qopt::server
