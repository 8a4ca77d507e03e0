#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "status.h"

namespace qopt {

void AccuracyMeter::Add(const at::Tensor& logits, const at::Tensor& labels) {
  const at::Tensor l = logits.detach().to(at::kCPU).to(at::kFloat).reshape({logits.size(0), -1});
  const at::Tensor y = labels.to(at::kCPU).to(at::kLong).reshape({-1, 1});
  const int64_t k = std::min<int64_t>(5, l.size(1));
  // A label's rank: the classes scoring above it, and those scoring the same with a lower
  // index. Rank 0 is argmax's choice (the first maximal index), so top-1 is what a user's
  // `logits.argmax(1) == labels` gives, even where quantized logits tie.
  const at::Tensor own = l.gather(1, y);
  const at::Tensor index = at::arange(l.size(1), at::kLong).unsqueeze(0);
  const at::Tensor rank = l.gt(own).logical_or(l.eq(own).logical_and(index.lt(y))).sum(1);
  const at::Tensor scored = own.squeeze(1).isnan().logical_not();  // a NaN logit is never a hit
  top1_ += rank.eq(0).logical_and(scored).sum().item<double>();
  top5_ += rank.lt(k).logical_and(scored).sum().item<double>();
  samples_ += l.size(0);
}

Accuracy AccuracyMeter::Result() const {
  Accuracy a;
  a.samples = samples_;
  if (samples_ > 0) {
    a.top1 = top1_ / static_cast<double>(samples_);
    a.top5 = top5_ / static_cast<double>(samples_);
  }
  return a;
}

void FidelityMeter::Add(const at::Tensor& reference, const at::Tensor& quantized) {
  const at::Tensor r = reference.detach().to(at::kCPU).to(at::kDouble);
  const at::Tensor q = quantized.detach().to(at::kCPU).to(at::kDouble);
  signal_ += r.pow(2).sum().item<double>();
  noise_ += (r - q).pow(2).sum().item<double>();
  samples_ += r.dim() > 0 ? r.size(0) : 1;
  if (r.dim() == 2) {
    agree_ += r.argmax(1).eq(q.argmax(1)).sum().item<double>();
    const at::Tensor log_p = at::log_softmax(r, 1), log_q = at::log_softmax(q, 1);
    kl_ += (log_p.exp() * (log_p - log_q)).sum().item<double>();
    classified_ += r.size(0);
  }
}

Fidelity FidelityMeter::Result() const {
  Fidelity f;
  f.samples = samples_;
  f.output_sqnr_db = noise_ > 0.0 ? 10.0 * std::log10(signal_ / noise_)
                                  : std::numeric_limits<double>::infinity();
  if (classified_ > 0) {
    f.top1_agreement = agree_ / static_cast<double>(classified_);
    f.mean_kl = kl_ / static_cast<double>(classified_);
  }
  return f;
}

void PsnrMeter::Add(const at::Tensor& outputs, const at::Tensor& targets) {
  const int64_t n = outputs.size(0);
  const at::Tensor y = outputs.detach().to(at::kCPU).to(at::kDouble).clamp(0.0, 1.0).reshape({n, -1});
  const at::Tensor t = targets.detach().to(at::kCPU).to(at::kDouble).reshape({n, -1});
  const at::Tensor mse = (y - t).pow(2).mean(1).clamp_min(1e-10);
  sum_db_ += (-10.0 * at::log10(mse)).sum().item<double>();
  samples_ += n;
}

void SegmentationMeter::Add(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t classes = logits.size(1);
  if (!confusion_.defined()) confusion_ = at::zeros({classes, classes}, at::kLong);
  // argmax picks the first maximal index, as PyTorch's does.
  const at::Tensor predicted = logits.detach().to(at::kCPU).argmax(1).reshape({-1});
  const at::Tensor truth = labels.to(at::kCPU).to(at::kLong).reshape({-1});
  const at::Tensor counted = truth.ge(0).logical_and(truth.lt(classes));
  const at::Tensor cell = truth.masked_select(counted) * classes + predicted.masked_select(counted);
  confusion_ += at::bincount(cell, {}, classes * classes).reshape({classes, classes});
}

Segmentation SegmentationMeter::Result() const {
  Segmentation s;
  if (!confusion_.defined()) return s;
  const at::Tensor c = confusion_.to(at::kDouble);
  const at::Tensor hits = c.diagonal();
  const at::Tensor union_ = c.sum(0) + c.sum(1) - hits;
  const at::Tensor present = union_.gt(0);
  s.pixels = confusion_.sum().item<int64_t>();
  s.classes_present = static_cast<int>(present.sum().item<int64_t>());
  if (s.classes_present > 0) {
    s.miou = (hits.masked_select(present) / union_.masked_select(present)).mean().item<double>();
  }
  if (s.pixels > 0) s.pixel_accuracy = hits.sum().item<double>() / static_cast<double>(s.pixels);
  // Foreground: labelled and predicted as any class but 0.
  const double fg_hits = c.slice(0, 1).slice(1, 1).sum().item<double>();
  const double fg_union = c.sum().item<double>() - c[0][0].item<double>();
  if (fg_union > 0) s.foreground_iou = fg_hits / fg_union;
  return s;
}

absl::StatusOr<TaskMetric> ParseTaskMetric(std::string_view name) {
  if (name.empty() || name == "auto") return TaskMetric::kAuto;
  if (name == "top1") return TaskMetric::kTop1;
  if (name == "psnr") return TaskMetric::kPsnr;
  if (name == "miou") return TaskMetric::kMiou;
  return absl::InvalidArgumentError(
      absl::StrCat("metric '", std::string(name), "' is not one of auto, top1, psnr, miou"));
}

const char* TaskMetricName(TaskMetric metric) {
  switch (metric) {
    case TaskMetric::kAuto: return "auto";
    case TaskMetric::kTop1: return "top1";
    case TaskMetric::kPsnr: return "psnr";
    case TaskMetric::kMiou: return "miou";
  }
  return "auto";
}

const char* TaskFigureName(TaskMetric metric) {
  switch (metric) {
    case TaskMetric::kPsnr: return "psnr_db";
    case TaskMetric::kMiou: return "miou";
    default: return "top1";
  }
}

namespace {

std::string Shape(const at::Tensor& t) {
  return absl::StrCat(c10::toString(t.scalar_type()), " (", absl::StrJoin(t.sizes(), ", "), ")");
}

bool Fits(TaskMetric metric, const at::Tensor& out, const at::Tensor& labels) {
  const bool integer = !at::isFloatingType(labels.scalar_type());
  const bool same_samples = out.dim() >= 1 && labels.dim() >= 1 && out.size(0) == labels.size(0);
  switch (metric) {
    case TaskMetric::kTop1:
      return integer && labels.dim() == 1 && out.dim() == 2 && same_samples;
    case TaskMetric::kMiou: {
      if (!integer || labels.dim() < 2 || out.dim() != labels.dim() + 1 || !same_samples) return false;
      for (int64_t d = 1; d < labels.dim(); ++d) {
        if (labels.size(d) != out.size(d + 1)) return false;
      }
      return true;
    }
    case TaskMetric::kPsnr:
      return !integer && labels.sizes() == out.sizes();
    case TaskMetric::kAuto:
      break;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::optional<TaskMetric>> ResolveTaskMetric(TaskMetric requested, const at::Tensor& outputs,
                                                            const at::Tensor& labels) {
  if (requested != TaskMetric::kAuto) {
    if (Fits(requested, outputs, labels)) return std::optional<TaskMetric>(requested);
    static constexpr const char* kNeeds[] = {
        "", "integer labels (N) with outputs (N, classes)",
        "float targets shaped like the outputs", "integer labels (N, ...) with outputs (N, classes, ...)"};
    return absl::InvalidArgumentError(absl::StrCat(
        "metric ", TaskMetricName(requested), " needs ", kNeeds[static_cast<int>(requested)], "; the model gives ",
        Shape(outputs), " and the labels are ", Shape(labels)));
  }
  for (TaskMetric m : {TaskMetric::kTop1, TaskMetric::kMiou, TaskMetric::kPsnr}) {
    if (Fits(m, outputs, labels)) return std::optional<TaskMetric>(m);
  }
  return std::optional<TaskMetric>();
}

absl::Status TaskMeter::Add(const at::Tensor& outputs, const std::optional<at::Tensor>& labels) {
  if (!labels) {
    if (requested_ != TaskMetric::kAuto) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", TaskMetricName(requested_), " needs labels; the data has none"));
    }
    scoring_ = false;
    first_ = false;
    return absl::OkStatus();
  }
  if (first_) {
    first_ = false;
    ASSIGN_OR_RETURN(resolved_, ResolveTaskMetric(requested_, outputs, *labels));
    scoring_ = resolved_.has_value();
  }
  if (!scoring_) return absl::OkStatus();
  if (!Fits(*resolved_, outputs, *labels)) {
    return absl::InvalidArgumentError(absl::StrCat("a batch does not fit metric ", TaskMetricName(*resolved_),
                                                   ": the model gives ", Shape(outputs), " and the labels are ",
                                                   Shape(*labels)));
  }
  switch (*resolved_) {
    case TaskMetric::kTop1: accuracy_.Add(outputs, *labels); break;
    case TaskMetric::kPsnr: psnr_.Add(outputs, *labels); break;
    case TaskMetric::kMiou: segmentation_.Add(outputs, *labels); break;
    case TaskMetric::kAuto: break;
  }
  return absl::OkStatus();
}

void TaskMeter::Report(const std::string& prefix, std::map<std::string, double>& figures) const {
  if (!metric()) return;
  switch (*resolved_) {
    case TaskMetric::kTop1: {
      const Accuracy a = accuracy_.Result();
      figures[prefix + "top1"] = a.top1;
      figures[prefix + "top5"] = a.top5;
      break;
    }
    case TaskMetric::kPsnr:
      figures[prefix + "psnr_db"] = psnr_.MeanDb();
      break;
    case TaskMetric::kMiou: {
      const Segmentation s = segmentation_.Result();
      figures[prefix + "miou"] = s.miou;
      figures[prefix + "foreground_iou"] = s.foreground_iou;
      figures[prefix + "pixel_accuracy"] = s.pixel_accuracy;
      break;
    }
    case TaskMetric::kAuto: break;
  }
}

}  // namespace qopt
