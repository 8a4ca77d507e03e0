#include "analysis/sim_scorer.h"

#include <algorithm>
#include <chrono>

#include <ATen/ATen.h>

#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "status.h"

namespace qopt {

absl::StatusOr<SimScorer> SimScorer::Create(QuantSim& sim, const std::vector<Batch>& batches, size_t n) {
  if (batches.empty()) return absl::InvalidArgumentError("no batches to score on");
  SimScorer s(sim, batches, n == 0 ? batches.size() : std::min(n, batches.size()));
  AccuracyMeter fp32;
  bool labelled = true;
  for (size_t b = 0; b < s.n_; ++b) {
    ASSIGN_OR_RETURN(at::Tensor out, sim.ForwardFloat(batches[b].inputs));
    labelled = labelled && batches[b].labels.has_value() && out.dim() == 2;
    if (labelled) fp32.Add(out, *batches[b].labels);
    s.reference_.push_back(out.detach());
    s.samples_ += batches[b].inputs.size(0);
  }
  s.name_ = labelled ? "top1" : "output_sqnr_db";
  if (labelled) {
    s.fp32_ = fp32.Result().top1;
    s.reference_.clear();
  }
  return s;
}

absl::StatusOr<double> SimScorer::Score() {
  const auto t0 = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const Figures f, EvaluateModel([this](const at::Tensor& x) { return sim_->Forward(x); }, *batches_,
                                                  n_, labelled() ? nullptr : &reference_));
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++evaluations_;
  return labelled() ? f.at("top1") : std::min(kMaxSqnrDb, f.at("output_sqnr_db"));
}

}  // namespace qopt
