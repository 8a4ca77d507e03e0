#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

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

}  // namespace qopt
