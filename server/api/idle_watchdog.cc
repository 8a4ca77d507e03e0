#include "api/idle_watchdog.h"

#include <algorithm>

namespace qopt::server {

IdleWatchdog::IdleWatchdog(std::chrono::milliseconds idle_timeout)
    : idle_timeout_(idle_timeout), thread_([this] { Run(); }) {}

IdleWatchdog::~IdleWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

void IdleWatchdog::Run() {
  // Checks a few times per timeout, so a call is cancelled within ~1.25x the timeout.
  const auto period = std::clamp(idle_timeout_ / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    stop_cv_.wait_for(lock, period, [this] { return stop_; });
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, call] : calls_) {
      if (call.timed_out || now - call.last < idle_timeout_) continue;
      // Under the lock: a Watch leaves the map before its call (and context) ends.
      call.ctx->TryCancel();
      call.timed_out = true;
    }
  }
}

IdleWatchdog::Watch::Watch(IdleWatchdog* dog, grpc::ServerContext* ctx) : dog_(dog) {
  std::lock_guard<std::mutex> lock(dog_->mu_);
  id_ = dog_->next_id_++;
  dog_->calls_[id_] = Entry{ctx, std::chrono::steady_clock::now()};
}

IdleWatchdog::Watch::~Watch() {
  std::lock_guard<std::mutex> lock(dog_->mu_);
  dog_->calls_.erase(id_);
}

void IdleWatchdog::Watch::Touch() {
  std::lock_guard<std::mutex> lock(dog_->mu_);
  dog_->calls_[id_].last = std::chrono::steady_clock::now();
}

bool IdleWatchdog::Watch::timed_out() const {
  std::lock_guard<std::mutex> lock(dog_->mu_);
  return dog_->calls_[id_].timed_out;
}

}  // namespace qopt::server
