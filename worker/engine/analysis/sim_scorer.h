// One number for how well a simulation does on fixed batches, for the searches that score
// many settings of one simulation (analysis, mixed precision): the task's figure (top-1,
// PSNR in dB or mIoU; see TaskMeter) when the batches are labelled, otherwise the output
// SQNR (dB) against the floating-point model, capped at kMaxSqnrDb.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "eval/metrics.h"
#include "quant/quantsim.h"

namespace qopt {

/// SQNR of outputs that are equal.
constexpr double kMaxSqnrDb = 300.0;

class SimScorer {
 public:
  /// Runs the floating-point model once over the first `n` batches (0 = all), keeping its
  /// outputs when the score is SQNR. `sim` and `batches` must outlive the scorer.
  /// InvalidArgument for empty batches.
  static absl::StatusOr<SimScorer> Create(QuantSim& sim, const std::vector<Batch>& batches, size_t n,
                                          TaskMetric metric = TaskMetric::kAuto);

  /// "top1", "psnr_db", "miou" or "output_sqnr_db".
  const std::string& name() const { return name_; }
  bool labelled() const { return name_ != "output_sqnr_db"; }
  /// The floating-point model's figure; NaN for SQNR (the reference itself).
  double fp32() const { return fp32_; }
  int64_t samples() const { return samples_; }

  /// The simulation as it is now.
  absl::StatusOr<double> Score();
  /// Runs of the simulation so far, and the seconds they took.
  int evaluations() const { return evaluations_; }
  double seconds() const { return seconds_; }

 private:
  SimScorer(QuantSim& sim, const std::vector<Batch>& batches, size_t n) : sim_(&sim), batches_(&batches), n_(n) {}

  QuantSim* sim_;
  const std::vector<Batch>* batches_;
  size_t n_;
  std::string name_;
  TaskMetric metric_ = TaskMetric::kAuto;
  double fp32_ = std::numeric_limits<double>::quiet_NaN();
  int64_t samples_ = 0;
  std::vector<at::Tensor> reference_;
  int evaluations_ = 0;
  double seconds_ = 0.0;
};

}  // namespace qopt
