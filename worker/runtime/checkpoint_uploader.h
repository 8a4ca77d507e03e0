// Sends a job's training checkpoints to qopt-server off the job's thread. The job's child
// rewrites one file at each epoch's end and the worker hears of it between the child's
// frames, so nothing there may wait while megabytes travel: Notify() only records that a
// new checkpoint is on disk, and one thread of the uploader sends it. One upload at a
// time; a checkpoint written during an upload is sent after it, and only the newest (the
// file holds nothing else). A failed upload is reported and the job goes on: a checkpoint
// only saves work when the job loses its worker.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace qopt::worker {

class CheckpointUploader {
 public:
  /// Sends the checkpoint as the file is now, on `ctx` (the upload sets its metadata and
  /// deadline). `stop` turns true when the uploader finishes: long local work (hashing)
  /// should look at it.
  using Upload = std::function<absl::Status(grpc::ClientContext* ctx, const std::atomic<bool>& stop)>;
  /// `done` hears each upload's result. Both run on the uploader's thread.
  CheckpointUploader(Upload upload, std::function<void(const absl::Status&)> done);
  /// Finish().
  ~CheckpointUploader();
  CheckpointUploader(const CheckpointUploader&) = delete;
  CheckpointUploader& operator=(const CheckpointUploader&) = delete;

  /// A new checkpoint is complete on disk. Returns at once.
  void Notify();
  /// Cancels an upload in flight, drops one not started, and waits for the thread. For the
  /// job's end: once it reports its final state the server refuses checkpoints anyway.
  void Finish();

 private:
  void Run();

  Upload upload_;
  std::function<void(const absl::Status&)> done_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool pending_ = false;
  std::atomic<bool> stop_{false};
  grpc::ClientContext* in_flight_ = nullptr;  // guarded by mu_
  std::thread thread_;  // last: it starts once the members above exist
};

}  // namespace qopt::worker
