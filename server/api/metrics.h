// Prometheus metrics of qopt-server (prometheus-cpp), served on their own port:
// jobs by state and by state and technique, queue depth, job and step durations, lease
// expiries, live workers, bytes in and out, and RPC latency by method.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "qopt/v1/service.pb.h"

namespace qopt::server {

class Metrics {
 public:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void SetJobCounts(const std::vector<std::pair<v1::JobState, int64_t>>& counts);
  /// (state, technique, count) triples; combinations no longer present drop to 0.
  void SetTechniqueCounts(const std::vector<std::tuple<v1::JobState, std::string, int64_t>>& counts);
  /// A job reached a final state; its duration is created -> updated.
  void JobFinished(const v1::Job& job);
  /// A worker reported a finished recipe step `step` (as named in recipes) that took
  /// `seconds`. A name that is no step counts as "unknown": workers are not trusted to
  /// choose label values. A time that is negative or not finite is not counted.
  void StepFinished(const std::string& step, double seconds);
  void LeaseExpired(int count);
  /// A worker called in; workers not heard from for 30 s stop counting as live.
  void WorkerSeen(const std::string& worker_id);
  void UpdateLiveWorkers();
  void BytesIn(int64_t n) { bytes_in_->Increment(static_cast<double>(n)); }
  void BytesOut(int64_t n) { bytes_out_->Increment(static_cast<double>(n)); }
  void ObserveRpc(const std::string& method, double seconds);

  /// Times one RPC handler from construction to destruction.
  class RpcTimer {
   public:
    RpcTimer(Metrics* m, std::string method)
        : m_(m), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}
    ~RpcTimer() {
      m_->ObserveRpc(method_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }

   private:
    Metrics* m_;
    std::string method_;
    std::chrono::steady_clock::time_point start_;
  };

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* jobs_;
  prometheus::Family<prometheus::Gauge>* jobs_by_technique_;
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> technique_gauges_;
  prometheus::Gauge* queue_depth_;
  prometheus::Family<prometheus::Histogram>* job_seconds_;
  prometheus::Family<prometheus::Histogram>* step_seconds_;
  prometheus::Counter* lease_expiries_;
  prometheus::Gauge* live_workers_;
  prometheus::Counter* bytes_in_;
  prometheus::Counter* bytes_out_;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_;
  std::mutex mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> workers_;
};

}  // namespace qopt::server
