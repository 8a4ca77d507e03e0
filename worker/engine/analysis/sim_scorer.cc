#include "analysis/sim_scorer.h"

#include <algorithm>
#include <chrono>

#include <ATen/ATen.h>

#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "status.h"

namespace qopt {

absl::StatusOr<SimScorer> SimScorer::Create(QuantSim& sim, const std::vector<Batch>& batches, size_t n,
                                            TaskMetric metric) {
  if (batches.empty()) return absl::InvalidArgumentError("no batches to score on");
  SimScorer s(sim, batches, n == 0 ? batches.size() : std::min(n, batches.size()));
  TaskMeter fp32(metric);
  for (size_t b = 0; b < s.n_; ++b) {
    ASSIGN_OR_RETURN(at::Tensor out, sim.ForwardFloat(batches[b].inputs));
    RETURN_IF_ERROR(fp32.Add(out, batches[b].labels));
    s.reference_.push_back(out.detach());
    s.samples_ += batches[b].inputs.size(0);
  }
  s.name_ = "output_sqnr_db";
  if (fp32.metric()) {
    s.metric_ = *fp32.metric();
    s.name_ = std::string(TaskFigureName(s.metric_));
    Figures figures;
    fp32.Report("", figures);
    s.fp32_ = figures.at(s.name_);
    s.reference_.clear();
  }
  return s;
}

absl::StatusOr<double> SimScorer::Score() {
  const auto t0 = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const Figures f, EvaluateModel([this](const at::Tensor& x) { return sim_->Forward(x); }, *batches_,
                                                  n_, labelled() ? nullptr : &reference_, metric_));
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++evaluations_;
  return labelled() ? f.at(name_) : std::min(kMaxSqnrDb, f.at("output_sqnr_db"));
}

}  // namespace qopt
