// The worker's checkpoint uploader: Notify() never waits for an upload, checkpoints
// announced during an upload become one more upload (the newest file), failures are
// reported and later checkpoints still go, and Finish() stops an upload in flight.
#include "runtime/checkpoint_uploader.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace qopt::worker {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// An upload that blocks until the test releases it (or the uploader stops: polled, as a
// real upload's hashing loop does), counting calls.
class Gate {
 public:
  CheckpointUploader::Upload Upload() {
    return [this](grpc::ClientContext*, const std::atomic<bool>& stop) {
      std::unique_lock<std::mutex> lock(mu_);
      ++started_;
      changed_.notify_all();
      while (released_ == 0 && !stop) changed_.wait_for(lock, milliseconds(10));
      if (stop) return absl::CancelledError("stopped");
      --released_;
      return next_failure_.ok() ? absl::OkStatus() : std::exchange(next_failure_, absl::OkStatus());
    };
  }
  void Release(int n = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    released_ += n;
    changed_.notify_all();
  }
  void FailNext(absl::Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    next_failure_ = std::move(s);
  }
  bool WaitStarted(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, std::chrono::seconds(5), [&] { return started_ >= n; });
  }
  int started() {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }
 private:
  std::mutex mu_;
  std::condition_variable changed_;
  int started_ = 0, released_ = 0;
  absl::Status next_failure_;
};

struct Results {
  std::mutex mu;
  std::condition_variable changed;
  std::vector<absl::Status> done;
  std::function<void(const absl::Status&)> Callback() {
    return [this](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      done.push_back(s);
      changed.notify_all();
    };
  }
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return changed.wait_for(lock, std::chrono::seconds(5), [&] { return done.size() >= n; });
  }
};

TEST(CheckpointUploaderTest, CheckpointsDuringAnUploadBecomeOneMoreUpload) {
  Gate gate;
  Results results;
  CheckpointUploader uploader(gate.Upload(), results.Callback());
  uploader.Notify();
  ASSERT_TRUE(gate.WaitStarted(1));
  const auto before = steady_clock::now();
  for (int i = 0; i < 5; ++i) uploader.Notify();
  EXPECT_LT(steady_clock::now() - before, milliseconds(100)) << "Notify waits for no upload";
  gate.Release(2);
  ASSERT_TRUE(results.WaitFor(2));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(gate.started(), 2) << "five checkpoints during an upload are sent once, as the newest file";
  uploader.Finish();
  EXPECT_EQ(results.done.size(), 2u);
}

TEST(CheckpointUploaderTest, AFailedUploadIsReportedAndTheNextCheckpointStillGoes) {
  Gate gate;
  Results results;
  CheckpointUploader uploader(gate.Upload(), results.Callback());
  gate.FailNext(absl::UnavailableError("server gone"));
  uploader.Notify();
  gate.Release();
  ASSERT_TRUE(results.WaitFor(1));
  EXPECT_TRUE(absl::IsUnavailable(results.done[0]));
  uploader.Notify();
  gate.Release();
  ASSERT_TRUE(results.WaitFor(2));
  EXPECT_TRUE(results.done[1].ok());
}

TEST(CheckpointUploaderTest, FinishStopsAnUploadInFlightAndDropsThePendingOne) {
  Gate gate;
  Results results;
  auto uploader = std::make_unique<CheckpointUploader>(gate.Upload(), results.Callback());
  uploader->Notify();
  ASSERT_TRUE(gate.WaitStarted(1));
  uploader->Notify();  // pending behind the one in flight
  const auto before = steady_clock::now();
  uploader->Finish();
  EXPECT_LT(steady_clock::now() - before, std::chrono::seconds(2));
  EXPECT_EQ(gate.started(), 1) << "the pending checkpoint is not sent once the job ended";
  EXPECT_TRUE(results.done.empty()) << "an upload stopped by Finish is no failure";
  uploader.reset();  // Finish again, from the destructor
}

}  // namespace
}  // namespace qopt::worker
