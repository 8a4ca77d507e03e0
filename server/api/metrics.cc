#include "api/metrics.h"

#include <cmath>

#include "recipe_check.h"
#include "steps/step_spec.h"

namespace qopt::server {
namespace {

// Jobs and their steps take from under a second (evaluating a small model) to hours
// (QAT, AdaRound on a large one).
const prometheus::Histogram::BucketBoundaries kWorkSeconds = {0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 43200};

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  jobs_ = &prometheus::BuildGauge().Name("qopt_jobs").Help("Jobs by state").Register(*registry_);
  jobs_by_technique_ = &prometheus::BuildGauge()
                            .Name("qopt_jobs_by_technique")
                            .Help("Jobs by state and technique (the recipe's steps, e.g. fold_batch_norm+calibrate)")
                            .Register(*registry_);
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("qopt_queue_depth")
                      .Help("Jobs waiting for a worker")
                      .Register(*registry_)
                      .Add({});
  job_seconds_ = &prometheus::BuildHistogram()
                      .Name("qopt_job_duration_seconds")
                      .Help("Submission to final state, by final state and technique")
                      .Register(*registry_);
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("qopt_step_duration_seconds")
                       .Help("Time of one finished recipe step on its worker, by step (as named in recipes)")
                       .Register(*registry_);
  lease_expiries_ = &prometheus::BuildCounter()
                         .Name("qopt_lease_expiries_total")
                         .Help("Leases that expired (worker lost)")
                         .Register(*registry_)
                         .Add({});
  live_workers_ = &prometheus::BuildGauge()
                       .Name("qopt_live_workers")
                       .Help("Workers heard from in the last 30 s")
                       .Register(*registry_)
                       .Add({});
  auto& bytes = prometheus::BuildCounter().Name("qopt_bytes_total").Help("Blob bytes by direction").Register(*registry_);
  bytes_in_ = &bytes.Add({{"direction", "in"}});
  bytes_out_ = &bytes.Add({{"direction", "out"}});
  rpc_seconds_ = &prometheus::BuildHistogram()
                      .Name("qopt_rpc_duration_seconds")
                      .Help("RPC handler time by method")
                      .Register(*registry_);
}

void Metrics::SetJobCounts(const std::vector<std::pair<v1::JobState, int64_t>>& counts) {
  double queued = 0;
  for (int s = v1::QUEUED; s <= v1::CANCELLED; ++s) {
    double n = 0;
    for (const auto& [state, count] : counts) {
      if (state == s) n = static_cast<double>(count);
    }
    jobs_->Add({{"state", v1::JobState_Name(static_cast<v1::JobState>(s))}}).Set(n);
    if (s == v1::QUEUED) queued = n;
  }
  queue_depth_->Set(queued);
}

void Metrics::SetTechniqueCounts(
    const std::vector<std::tuple<v1::JobState, std::string, int64_t>>& counts) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [labels, gauge] : technique_gauges_) gauge->Set(0);
  for (const auto& [state, technique, count] : counts) {
    const std::pair<std::string, std::string> labels{v1::JobState_Name(state),
                                                     technique.empty() ? "unknown" : technique};
    auto it = technique_gauges_.find(labels);
    if (it == technique_gauges_.end()) {
      it = technique_gauges_
               .emplace(labels, &jobs_by_technique_->Add({{"state", labels.first}, {"technique", labels.second}}))
               .first;
    }
    it->second->Set(static_cast<double>(count));
  }
}

void Metrics::JobFinished(const v1::Job& job) {
  job_seconds_->Add({{"state", v1::JobState_Name(job.state())}, {"technique", RecipeTechnique(job.recipe())}},
                    kWorkSeconds)
      .Observe(static_cast<double>(job.updated_unix_ms() - job.created_unix_ms()) / 1000.0);
}

void Metrics::StepFinished(const std::string& step, double seconds) {
  // A NaN or infinity would stay in the histogram's sum for good; a negative time is no
  // measurement either.
  if (!std::isfinite(seconds) || seconds < 0) return;
  // Each label value is a series of its own; only the registry's step names may make one.
  const std::string label = FindStepSpec(step) != nullptr ? step : "unknown";
  step_seconds_->Add({{"step", label}}, kWorkSeconds).Observe(seconds);
}

void Metrics::LeaseExpired(int count) {
  if (count > 0) lease_expiries_->Increment(count);
}

void Metrics::WorkerSeen(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_[worker_id] = std::chrono::steady_clock::now();
}

void Metrics::UpdateLiveWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto cutoff = std::chrono::steady_clock::now() - std::chrono::seconds(30);
  for (auto it = workers_.begin(); it != workers_.end();) {
    it = it->second < cutoff ? workers_.erase(it) : std::next(it);
  }
  live_workers_->Set(static_cast<double>(workers_.size()));
}

void Metrics::ObserveRpc(const std::string& method, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30};
  rpc_seconds_->Add({{"method", method}}, kBuckets).Observe(seconds);
}

}  // namespace qopt::server
