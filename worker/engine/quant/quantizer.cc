#include "quant/quantizer.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "quant/fake_quantize.h"

namespace qopt {

Quantizer::Quantizer(QuantSpec spec, CalibrationMethod method, double percentile, int axis)
    : spec_(spec), method_(method), percentile_(percentile), axis_(axis) {}

void Quantizer::Observe(const at::Tensor& x) {
  if (frozen_) return;
  if (!analyzer_) analyzer_.emplace(method_, percentile_);
  analyzer_->Update(x);
}

void Quantizer::ObserveClamped(at::Tensor& x, double clamp_lo, double clamp_hi) {
  if (frozen_) {
    x.clamp_(clamp_lo, clamp_hi);
    return;
  }
  if (!analyzer_) analyzer_.emplace(method_, percentile_);
  analyzer_->UpdateClamped(x, clamp_lo, clamp_hi);
}

absl::Status Quantizer::ComputeFromStatistics() {
  if (frozen_) return absl::OkStatus();
  if (!analyzer_ || !analyzer_->has_data()) {
    return absl::FailedPreconditionError("no calibration data reached this quantizer");
  }
  auto e = analyzer_->Compute(spec_);
  if (!e.ok()) return e.status();
  return SetEncodings({*e}, /*freeze=*/false);
}

void Quantizer::Respec(QuantSpec spec, int axis) {
  spec_ = spec;
  axis_ = axis;
  frozen_ = false;
  encodings_.clear();
  scale_ = at::Tensor();
  zero_point_ = at::Tensor();
}

absl::Status Quantizer::ComputeFromTensor(const at::Tensor& t) {
  if (frozen_) return absl::OkStatus();
  auto e = ComputeTensorEncodings(t, axis_, method_, percentile_, spec_);
  if (!e.ok()) return e.status();
  return SetEncodings(std::move(*e), /*freeze=*/false);
}

absl::Status Quantizer::SetEncodings(std::vector<Encoding> encodings, bool freeze) {
  if (encodings.empty()) return absl::InvalidArgumentError("no encodings given");
  if (axis_ < 0 && encodings.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "per-tensor quantizer given ", encodings.size(), " encodings"));
  }
  encodings_ = std::move(encodings);
  frozen_ = frozen_ || freeze;
  std::vector<float> scales;
  std::vector<int32_t> zps;
  for (const auto& e : encodings_) {
    scales.push_back(static_cast<float>(e.scale));
    zps.push_back(static_cast<int32_t>(e.zero_point()));
  }
  scale_ = at::tensor(scales, at::kFloat);
  zero_point_ = at::tensor(zps, at::kInt);
  return absl::OkStatus();
}

at::Tensor Quantizer::Apply(const at::Tensor& x, bool inplace) const {
  if (!enabled_ || encodings_.empty()) return x;
  const Encoding& e = encodings_.front();
  if (axis_ < 0) return FakeQuantizePerTensor(x, e, inplace);
  if (scale_.device() != x.device()) {
    scale_ = scale_.to(x.device());
    zero_point_ = zero_point_.to(x.device());
  }
  return at::fake_quantize_per_channel_affine(x, scale_, zero_point_, axis_, e.quant_min(),
                                              e.quant_max());
}

}  // namespace qopt
