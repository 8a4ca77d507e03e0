#include "runtime/checkpoint_uploader.h"

namespace qopt::worker {

CheckpointUploader::CheckpointUploader(Upload upload, std::function<void(const absl::Status&)> done)
    : upload_(std::move(upload)), done_(std::move(done)), thread_([this] { Run(); }) {}

CheckpointUploader::~CheckpointUploader() { Finish(); }

void CheckpointUploader::Notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = true;
  }
  wake_.notify_one();
}

void CheckpointUploader::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    // gRPC honours a cancellation made before its call starts, too.
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void CheckpointUploader::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return pending_ || stop_; });
    if (stop_) return;
    pending_ = false;
    grpc::ClientContext ctx;
    in_flight_ = &ctx;
    lock.unlock();
    const absl::Status sent = upload_(&ctx, stop_);
    lock.lock();
    in_flight_ = nullptr;
    if (stop_) return;  // cancelled by Finish: not the upload's fault
    lock.unlock();
    done_(sent);
    lock.lock();
  }
}

}  // namespace qopt::worker
