// Evaluation of a model's outputs: the task's figure against labels (top-1 / top-5 for
// classifiers, PSNR for images, mIoU for per-pixel classes), and fidelity of a quantized
// model's outputs to the floating-point model's on the same inputs.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace qopt {

struct Accuracy {
  int64_t samples = 0;
  // Classes rank by logit, ties by index (the lower first): top-1 is `argmax == label`,
  // as PyTorch's argmax picks the first maximal index.
  double top1 = 0.0;  // 0..1
  double top5 = 0.0;  // 0..1 (top-k with k = min(5, classes))
};

struct Fidelity {
  int64_t samples = 0;
  double output_sqnr_db = 0.0;  // 10 log10(sum y^2 / sum (y - y_q)^2)
  double top1_agreement = 0.0;  // share of samples whose arg-max agrees
  double mean_kl = 0.0;         // mean KL(softmax(y) || softmax(y_q)), nats
};

/// Accumulates accuracy over batches of logits (N, classes) and labels (N).
class AccuracyMeter {
 public:
  void Add(const at::Tensor& logits, const at::Tensor& labels);
  Accuracy Result() const;

 private:
  int64_t samples_ = 0;
  double top1_ = 0.0, top5_ = 0.0;
};

/// Accumulates fidelity of `quantized` to `reference` outputs over batches. Outputs of
/// any shape give SQNR; (N, classes) outputs also give agreement and KL.
class FidelityMeter {
 public:
  void Add(const at::Tensor& reference, const at::Tensor& quantized);
  Fidelity Result() const;

 private:
  int64_t samples_ = 0, classified_ = 0;
  double signal_ = 0.0, noise_ = 0.0, agree_ = 0.0, kl_ = 0.0;
};

/// Mean PSNR (dB) of images against targets in [0, 1]: per image 10 log10(1 / MSE), with
/// the output clamped to [0, 1] and the MSE floored at 1e-10 (100 dB), averaged over images.
class PsnrMeter {
 public:
  /// `outputs` and `targets` of the same shape, first axis = images.
  void Add(const at::Tensor& outputs, const at::Tensor& targets);
  int64_t samples() const { return samples_; }
  double MeanDb() const { return samples_ > 0 ? sum_db_ / static_cast<double>(samples_) : 0.0; }

 private:
  int64_t samples_ = 0;
  double sum_db_ = 0.0;
};

struct Segmentation {
  int64_t pixels = 0;          // counted pixels (labels in 0..classes-1)
  double miou = 0.0;           // mean IoU over the classes present in labels or predictions
  double foreground_iou = 0.0; // IoU of "any class but 0" against class 0 (background)
  double pixel_accuracy = 0.0;
  int classes_present = 0;
};

/// Per-pixel classification over batches of logits (N, classes, ...) and integer labels
/// (N, ...): the predicted class is the argmax over the class axis (ties to the lower
/// index); one confusion matrix over all pixels. Pixels labelled outside 0..classes-1
/// (e.g. an "ignore" value of 255) are not counted.
class SegmentationMeter {
 public:
  void Add(const at::Tensor& logits, const at::Tensor& labels);
  Segmentation Result() const;

 private:
  at::Tensor confusion_;  // (classes, classes) int64: [label][prediction]
};

/// The figure a task is measured by.
enum class TaskMetric { kAuto, kTop1, kPsnr, kMiou };

/// "", "auto", "top1", "psnr", "miou".
absl::StatusOr<TaskMetric> ParseTaskMetric(std::string_view name);
const char* TaskMetricName(TaskMetric metric);

/// The metric for a model's outputs and labels: `requested`, when they fit it, else an
/// error that names the shapes; kAuto picks top1 for integer labels (N) with outputs
/// (N, classes), miou for integer labels (N, ...) with outputs (N, classes, ...), psnr for
/// float targets shaped like the outputs, and nullopt when none fits.
absl::StatusOr<std::optional<TaskMetric>> ResolveTaskMetric(TaskMetric requested, const at::Tensor& outputs,
                                                            const at::Tensor& labels);

/// The task's figure over batches of outputs and labels, with the metric resolved on the
/// first batch. Figures (with a prefix such as "fp32_"): top1, top5 | psnr_db |
/// miou, foreground_iou, pixel_accuracy.
class TaskMeter {
 public:
  explicit TaskMeter(TaskMetric requested = TaskMetric::kAuto) : requested_(requested) {}
  /// Unlabelled batches (or, with kAuto, labels that fit no metric) make the meter
  /// report nothing; a batch that does not fit the metric resolved on the first is an error.
  absl::Status Add(const at::Tensor& outputs, const std::optional<at::Tensor>& labels);
  /// The metric measured, once a batch fitted one.
  std::optional<TaskMetric> metric() const { return scoring_ ? resolved_ : std::nullopt; }
  void Report(const std::string& prefix, std::map<std::string, double>& figures) const;

 private:
  TaskMetric requested_;
  std::optional<TaskMetric> resolved_;
  bool first_ = true, scoring_ = false;
  AccuracyMeter accuracy_;
  PsnrMeter psnr_;
  SegmentationMeter segmentation_;
};

/// The figure's name in Figures for a metric: "top1", "psnr_db", "miou".
const char* TaskFigureName(TaskMetric metric);

}  // namespace qopt
