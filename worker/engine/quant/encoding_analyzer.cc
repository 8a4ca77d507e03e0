#include "quant/encoding_analyzer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace qopt {

std::string_view AimetQuantScheme(CalibrationMethod m) {
  switch (m) {
    case CalibrationMethod::kMinMax: return "post_training_tf";
    case CalibrationMethod::kSqnr: return "post_training_tf_enhanced";
    case CalibrationMethod::kPercentile: return "post_training_percentile";
    case CalibrationMethod::kMse: return "post_training_mse";
  }
  return "?";
}

double Histogram::BinCenter(int i) const {
  return lo_ + (hi_ - lo_) * (static_cast<double>(i) + 0.5) / kBins;
}

void Histogram::Rebin(double lo, double hi) {
  std::vector<double> fresh(kBins, 0.0);
  const double width = (hi - lo) / kBins;
  for (int i = 0; i < kBins; ++i) {
    if (counts_[i] == 0.0) continue;
    int j = static_cast<int>((BinCenter(i) - lo) / width);
    fresh[std::clamp(j, 0, kBins - 1)] += counts_[i];
  }
  counts_ = std::move(fresh);
  lo_ = lo;
  hi_ = hi;
}

void Histogram::Update(const at::Tensor& x) {
  if (x.numel() == 0) return;
  at::Tensor flat = x.detach().reshape({-1}).to(at::kFloat);
  auto [mn_t, mx_t] = at::aminmax(flat);
  double mn = mn_t.item<double>(), mx = mx_t.item<double>();
  if (!std::isfinite(mn) || !std::isfinite(mx)) {
    flat = flat.nan_to_num(0.0, 0.0, 0.0);
    mn = flat.min().item<double>();
    mx = flat.max().item<double>();
  }
  if (mx - mn < 1e-12) mx = mn + 1e-6;
  if (total_ == 0.0) {
    counts_.assign(kBins, 0.0);
    lo_ = mn;
    hi_ = mx;
  } else if (mn < lo_ || mx > hi_) {
    Rebin(std::min(mn, lo_), std::max(mx, hi_));
  }
  at::Tensor h = at::histc(flat, kBins, lo_, hi_).to(at::kCPU).to(at::kDouble);
  const double* p = h.data_ptr<double>();
  for (int i = 0; i < kBins; ++i) counts_[i] += p[i];
  total_ += static_cast<double>(flat.numel());
}

double Histogram::Quantile(double fraction) const {
  const double target = fraction * total_;
  double acc = 0.0;
  const double width = (hi_ - lo_) / kBins;
  for (int i = 0; i < kBins; ++i) {
    if (acc + counts_[i] >= target && counts_[i] > 0.0) {
      const double within = (target - acc) / counts_[i];
      return lo_ + width * (i + std::clamp(within, 0.0, 1.0));
    }
    acc += counts_[i];
  }
  return hi_;
}

EncodingAnalyzer::EncodingAnalyzer(CalibrationMethod method, double percentile)
    : method_(method), percentile_(percentile) {}

void EncodingAnalyzer::Update(const at::Tensor& x) {
  if (x.numel() == 0) return;
  if (method_ == CalibrationMethod::kMinMax) {
    auto [mn_t, mx_t] = at::aminmax(x.detach());
    const double mn = mn_t.item<double>(), mx = mx_t.item<double>();
    min_ = seen_ ? std::min(min_, mn) : mn;
    max_ = seen_ ? std::max(max_, mx) : mx;
  } else {
    histogram_.Update(x);
    min_ = histogram_.lo();
    max_ = histogram_.hi();
  }
  seen_ = true;
}

// Expected quantization noise of an encoding over the histogram: values inside the
// range get the rounding noise of a uniform quantizer (scale^2 / 12); clipped values get
// their squared clipping error, weighted by `clip_weight`. The candidate ranges are
// fractions of the observed range, as in AIMET's SQNR ("tf_enhanced") search.
Encoding EncodingAnalyzer::SearchRange(const QuantSpec& spec, double clip_weight) const {
  const auto& counts = histogram_.counts();
  auto noise = [&](const Encoding& e) {
    double total = 0.0;
    const double rounding = e.scale * e.scale / 12.0;
    for (int i = 0; i < Histogram::kBins; ++i) {
      if (counts[i] == 0.0) continue;
      const double c = histogram_.BinCenter(i);
      if (c < e.min) {
        total += counts[i] * clip_weight * (e.min - c) * (e.min - c);
      } else if (c > e.max) {
        total += counts[i] * clip_weight * (c - e.max) * (c - e.max);
      } else {
        total += counts[i] * rounding;
      }
    }
    return total;
  };
  constexpr int kCandidates = 64;
  Encoding best = ComputeEncoding(min_, max_, spec);
  double best_noise = noise(best);
  const bool one_sided = spec.symmetric || min_ >= 0.0 || max_ <= 0.0;
  for (int i = 1; i <= kCandidates; ++i) {
    const double fi = static_cast<double>(i) / kCandidates;
    if (one_sided) {
      const Encoding e = ComputeEncoding(min_ * fi, max_ * fi, spec);
      if (const double n = noise(e); n < best_noise) best_noise = n, best = e;
      continue;
    }
    for (int j = 1; j <= kCandidates; ++j) {
      const double fj = static_cast<double>(j) / kCandidates;
      const Encoding e = ComputeEncoding(min_ * fi, max_ * fj, spec);
      if (const double n = noise(e); n < best_noise) best_noise = n, best = e;
    }
  }
  return best;
}

absl::StatusOr<Encoding> EncodingAnalyzer::Compute(const QuantSpec& spec) const {
  if (!seen_) {
    return absl::FailedPreconditionError("no calibration data reached this quantizer");
  }
  switch (method_) {
    case CalibrationMethod::kMinMax:
      return ComputeEncoding(min_, max_, spec);
    case CalibrationMethod::kSqnr:
      // AIMET weighs clipping noise three times rounding noise.
      return SearchRange(spec, 3.0);
    case CalibrationMethod::kMse:
      return SearchRange(spec, 1.0);
    case CalibrationMethod::kPercentile: {
      const double tail = (100.0 - percentile_) / 100.0;
      return ComputeEncoding(histogram_.Quantile(tail), histogram_.Quantile(1.0 - tail), spec);
    }
  }
  return absl::InternalError("unknown calibration method");
}

absl::StatusOr<std::vector<Encoding>> ComputeTensorEncodings(const at::Tensor& t, int axis,
                                                             CalibrationMethod method,
                                                             double percentile,
                                                             const QuantSpec& spec) {
  std::vector<Encoding> out;
  if (axis < 0) {
    EncodingAnalyzer a(method, percentile);
    a.Update(t);
    auto e = a.Compute(spec);
    if (!e.ok()) return e.status();
    out.push_back(*e);
    return out;
  }
  const int64_t channels = t.size(axis);
  out.reserve(channels);
  if (method == CalibrationMethod::kMinMax) {
    at::Tensor moved = t.detach().movedim(axis, 0).reshape({channels, -1}).to(at::kCPU);
    auto [mn, mx] = at::aminmax(moved, 1);
    mn = mn.to(at::kDouble).contiguous();
    mx = mx.to(at::kDouble).contiguous();
    for (int64_t c = 0; c < channels; ++c) {
      out.push_back(ComputeEncoding(mn.data_ptr<double>()[c], mx.data_ptr<double>()[c], spec));
    }
    return out;
  }
  for (int64_t c = 0; c < channels; ++c) {
    EncodingAnalyzer a(method, percentile);
    a.Update(t.select(axis, c));
    auto e = a.Compute(spec);
    if (!e.ok()) return e.status();
    out.push_back(*e);
  }
  return out;
}

}  // namespace qopt
