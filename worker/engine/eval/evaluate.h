// Evaluation of a QuantSim against its floating-point model over batches: the task's
// figure (top-1, PSNR or mIoU; see TaskMeter) when the batches have labels, fidelity always.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "eval/metrics.h"
#include "quant/quantsim.h"

namespace qopt {

/// Figures: output_sqnr_db, top1_agreement, mean_kl, eval_samples, float_seconds,
/// simulated_seconds, and with labels the task's figures of both models (TaskMeter):
/// fp32_top1, fp32_top5, top1, top5 | fp32_psnr_db, psnr_db | fp32_miou, miou,
/// fp32_foreground_iou, foreground_iou, fp32_pixel_accuracy, pixel_accuracy.
using Figures = std::map<std::string, double>;

/// Evaluates the first `n` batches by `metric`; `on_batch(done, n)` after each (non-OK stops).
absl::StatusOr<Figures> EvaluateSim(QuantSim& sim, const std::vector<Batch>& batches, size_t n,
                                    TaskMetric metric = TaskMetric::kAuto,
                                    const std::function<absl::Status(size_t, size_t)>& on_batch = nullptr);

/// A model's outputs for a batch of inputs.
using ModelFn = std::function<absl::StatusOr<at::Tensor>(const at::Tensor&)>;

/// Figures of one model on the first `n` batches: the task's figures by `metric` when the
/// batches have labels (top1 / top5, psnr_db, or miou / foreground_iou / pixel_accuracy);
/// with `reference` (another model's outputs for the same batches) also its fidelity to
/// them (output_sqnr_db, top1_agreement, mean_kl); eval_samples and seconds always.
absl::StatusOr<Figures> EvaluateModel(const ModelFn& model, const std::vector<Batch>& batches, size_t n,
                                      const std::vector<at::Tensor>* reference = nullptr,
                                      TaskMetric metric = TaskMetric::kAuto,
                                      const std::function<absl::Status(size_t, size_t)>& on_batch = nullptr);

/// The figure a drop is measured on: the task's (top-1, PSNR in dB or mIoU) when
/// labelled, else agreement with the floating-point model's top-1. Returns (name, float
/// value, simulated value).
std::tuple<std::string, double, double> HeadlineFigure(const Figures& f);

}  // namespace qopt
