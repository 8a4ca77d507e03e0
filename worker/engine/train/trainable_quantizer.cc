#include "train/trainable_quantizer.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "quant/encoding_analyzer.h"
#include "quant/fake_quantize.h"
#include "status.h"

namespace qopt {
namespace {

at::Tensor Leaf(const std::vector<double>& values, c10::Device device) {
  return at::tensor(values, at::kFloat).to(device).requires_grad_(true);
}

// Levels above zero on the grid (Qp): 127 for signed 8-bit, 255 for unsigned.
int64_t PositiveLevels(const Encoding& e) { return std::max<int64_t>(e.num_steps + e.offset, 1); }

}  // namespace

absl::StatusOr<RangeLearning> ParseRangeLearning(std::string_view name) {
  if (name == "off") return RangeLearning::kOff;
  if (name == "aimet") return RangeLearning::kAimet;
  if (name == "lsq") return RangeLearning::kLsq;
  return absl::InvalidArgumentError(absl::StrCat("range_learning '", std::string(name), "' is not off, aimet or lsq"));
}

std::string_view RangeLearningName(RangeLearning mode) {
  switch (mode) {
    case RangeLearning::kOff: return "off";
    case RangeLearning::kAimet: return "aimet";
    case RangeLearning::kLsq: return "lsq";
  }
  return "?";
}

absl::StatusOr<TrainableQuantizer> TrainableQuantizer::Create(const Quantizer& q, RangeLearning mode,
                                                              const at::Tensor& param, c10::Device device) {
  if (!q.has_encodings()) return absl::FailedPreconditionError("quantizer has no encodings to start from");
  TrainableQuantizer t;
  t.spec_ = q.spec();
  t.method_ = q.method();
  t.percentile_ = q.percentile();
  t.axis_ = q.axis();
  t.mode_ = mode;
  t.is_param_ = param.defined();
  t.frozen_ = q.frozen();
  const std::vector<Encoding>& enc = q.encodings();
  t.fixed_ = enc;
  t.symmetric_ = enc.front().symmetric;
  t.num_steps_ = enc.front().num_steps;
  if (t.is_param_) device = param.device();
  std::vector<double> scale, zero_point, lo, hi;
  for (const Encoding& e : enc) {
    scale.push_back(e.scale);
    zero_point.push_back(static_cast<double>(e.zero_point()));
    lo.push_back(e.min);
    hi.push_back(e.max);
  }
  t.scale_ = at::tensor(scale, at::kFloat).to(device);
  t.zero_point_ = at::tensor(zero_point, at::kFloat).to(device);
  if (t.frozen_ || mode == RangeLearning::kOff) return t;

  if (mode == RangeLearning::kAimet) {
    t.max_ = Leaf(hi, device);
    if (t.symmetric_) {
      t.fixed_offset_ = enc.front().offset;
    } else {
      t.min_ = Leaf(lo, device);
    }
    return t;
  }
  // LSQ: a weight's step size starts at 2 * mean|w| / sqrt(Qp), per channel when the
  // quantizer is; an activation's at its calibrated scale.
  if (t.is_param_) {
    const double qp = static_cast<double>(PositiveLevels(enc.front()));
    at::Tensor w = param.detach().to(at::kFloat);
    at::Tensor mean_abs = t.axis_ < 0 ? w.abs().mean().reshape({1})
                                      : w.abs().movedim(t.axis_, 0).reshape({w.size(t.axis_), -1}).mean(1);
    t.scale_ = (mean_abs * (2.0 / std::sqrt(qp))).clamp_min(1e-8);
  }
  t.scale_ = t.scale_.detach().clone().requires_grad_(true);
  // The zero points stay fixed, so Qp of the gradient scale is known now (the fewest
  // levels above zero over the channels).
  int64_t qp = t.num_steps_;
  for (const Encoding& e : enc) qp = std::min(qp, PositiveLevels(e));
  t.lsq_positive_levels_ = qp;
  return t;
}

std::pair<at::Tensor, at::Tensor> TrainableQuantizer::LearnedGrid() const {
  const double steps = static_cast<double>(num_steps_);
  if (mode_ == RangeLearning::kLsq) return {scale_, zero_point_};
  if (symmetric_) {
    const double positive = static_cast<double>(std::max<int64_t>(num_steps_ + fixed_offset_, 1));
    return {max_ / positive, at::full_like(max_, static_cast<double>(-fixed_offset_)).detach()};
  }
  at::Tensor scale = (max_ - min_) / steps;
  // offset = round(min / scale), rounded with a straight-through gradient.
  at::Tensor u = min_ / scale;
  at::Tensor rounded = u + (at::round(u) - u).detach();
  return {scale, at::clamp(-rounded, 0.0, steps)};
}

at::Tensor TrainableQuantizer::Apply(const at::Tensor& x) const {
  if (mode_ == RangeLearning::kOff || frozen_) {
    if (!is_param_ || frozen_) {
      if (axis_ < 0) {
        return FakeQuantizePerTensorSte(x, fixed_[0]);
      }
      return at::fake_quantize_per_channel_affine(x, scale_, zero_point_.to(at::kInt), axis_, 0, num_steps_);
    }
    // The weight's encodings follow the weight: recomputed from it, no gradient.
    auto enc = ComputeTensorEncodings(x.detach(), axis_, method_, percentile_, spec_);
    TORCH_CHECK(enc.ok(), "weight encodings: ", std::string(enc.status().message()));
    if (axis_ < 0) {
      return FakeQuantizePerTensorSte(x, (*enc)[0]);
    }
    std::vector<float> s;
    std::vector<int32_t> z;
    for (const Encoding& e : *enc) {
      s.push_back(static_cast<float>(e.scale));
      z.push_back(static_cast<int32_t>(e.zero_point()));
    }
    return at::fake_quantize_per_channel_affine(x, at::tensor(s).to(x.device()), at::tensor(z).to(x.device()),
                                                axis_, 0, num_steps_);
  }
  auto [scale, zero_point] = LearnedGrid();
  double grad_factor = 1.0;
  if (mode_ == RangeLearning::kLsq) {
    // N: values sharing one step size (per sample for activations); Qp: positive levels.
    const double n = is_param_ ? static_cast<double>(x.numel()) / static_cast<double>(scale_.numel())
                               : static_cast<double>(x.numel()) / static_cast<double>(std::max<int64_t>(x.size(0), 1));
    grad_factor = 1.0 / std::sqrt(std::max(n, 1.0) * static_cast<double>(lsq_positive_levels_));
  }
  if (axis_ < 0) return FakeQuantizeLearnedPerTensor(x, scale, zero_point, num_steps_, grad_factor);
  return FakeQuantizeLearnedPerChannel(x, scale, zero_point, axis_, num_steps_, grad_factor);
}

std::vector<at::Tensor> TrainableQuantizer::ranges() const {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : {min_, max_}) {
    if (t.defined()) out.push_back(t);
  }
  if (mode_ == RangeLearning::kLsq && !frozen_) out.push_back(scale_);
  return out;
}

void TrainableQuantizer::Clamp() {
  at::NoGradGuard no_grad;
  if (mode_ == RangeLearning::kLsq && !frozen_) scale_.clamp_min_(1e-8);
  if (mode_ != RangeLearning::kAimet || frozen_) return;
  // Zero stays on the grid, and the range keeps a width the scale can be made of.
  if (min_.defined()) {
    min_.clamp_max_(0.0);
    max_.clamp_min_(0.0);
    max_.copy_(at::max(max_, min_ + 1e-6));
  } else {
    max_.clamp_min_(1e-6);
  }
}

absl::StatusOr<std::vector<Encoding>> TrainableQuantizer::Encodings(const at::Tensor& param) const {
  if (mode_ == RangeLearning::kOff || frozen_) {
    if (is_param_ && !frozen_) return ComputeTensorEncodings(param.detach(), axis_, method_, percentile_, spec_);
    return fixed_;
  }
  at::NoGradGuard no_grad;
  auto [scale, zero_point] = LearnedGrid();
  at::Tensor s = scale.to(at::kFloat).cpu().contiguous();
  at::Tensor z = zero_point.cpu().contiguous();
  std::vector<Encoding> out;
  for (int64_t c = 0; c < s.numel(); ++c) {
    // The kernels round and clamp the zero point the same way.
    const double zp = std::nearbyint(std::clamp<double>(z[c].item<float>(), 0.0, static_cast<double>(num_steps_)));
    ASSIGN_OR_RETURN(Encoding e, EncodingFromScaleOffset(spec_.bitwidth, symmetric_, s[c].item<float>(),
                                                          -static_cast<int64_t>(zp)));
    out.push_back(e);
  }
  return out;
}

}  // namespace qopt
