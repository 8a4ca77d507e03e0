// Cancels client-streaming calls that go quiet. With the synchronous gRPC API a handler
// blocked in ServerReader::Read() holds its thread (and whatever file it has open) until
// a message arrives; a deadline check between reads never runs while Read() blocks. A
// watchdog thread therefore cancels (ServerContext::TryCancel) every watched call that
// has received nothing for the idle timeout, which makes the blocked Read() return false.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

namespace qopt::server {

class IdleWatchdog {
 public:
  explicit IdleWatchdog(std::chrono::milliseconds idle_timeout);
  ~IdleWatchdog();
  IdleWatchdog(const IdleWatchdog&) = delete;
  IdleWatchdog& operator=(const IdleWatchdog&) = delete;

  /// Watches one call while it lives; Touch() after each message received.
  class Watch {
   public:
    Watch(IdleWatchdog* dog, grpc::ServerContext* ctx);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    void Touch();
    /// True when the watchdog cancelled the call for idling.
    bool timed_out() const;

   private:
    IdleWatchdog* dog_;
    uint64_t id_;
  };

  std::chrono::milliseconds idle_timeout() const { return idle_timeout_; }

 private:
  struct Entry {
    grpc::ServerContext* ctx;
    std::chrono::steady_clock::time_point last;
    bool timed_out = false;
  };
  void Run();

  const std::chrono::milliseconds idle_timeout_;
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  uint64_t next_id_ = 0;
  std::map<uint64_t, Entry> calls_;
  std::thread thread_;
};

}  // namespace qopt::server
