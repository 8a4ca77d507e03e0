// A quantize-dequantize op on one tensor: its grid spec, its encodings (one, or one per
// channel), and the statistics that produce them. Applying it calls
// torch.fake_quantize_per_tensor_affine / _per_channel_affine, so the simulation is the
// op stock PyTorch runs on the exported model, bit for bit, with straight-through
// gradients.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "quant/encoding.h"
#include "quant/encoding_analyzer.h"

namespace qopt {

class Quantizer {
 public:
  Quantizer(QuantSpec spec, CalibrationMethod method, double percentile, int axis);

  const QuantSpec& spec() const { return spec_; }
  CalibrationMethod method() const { return method_; }
  double percentile() const { return percentile_; }
  /// Channel axis for per-channel encodings, -1 for per-tensor.
  int axis() const { return axis_; }
  bool enabled() const { return enabled_; }
  void set_enabled(bool e) { enabled_ = e; }
  /// Frozen encodings are kept by calibration.
  bool frozen() const { return frozen_; }
  bool has_encodings() const { return !encodings_.empty(); }
  /// Whether calibration has observed any data.
  bool has_statistics() const { return analyzer_ && analyzer_->has_data(); }
  const std::vector<Encoding>& encodings() const { return encodings_; }

  /// Collects statistics of an activation (per-tensor quantizers only).
  void Observe(const at::Tensor& x);
  /// Clamps `x` to [clamp_lo, clamp_hi] in place, as at::clamp does, and observes the
  /// result: a clip and its statistics in one pass where the histogram allows (the
  /// caller skips the clip). Clamps even when frozen.
  void ObserveClamped(at::Tensor& x, double clamp_lo, double clamp_hi);
  /// Turns collected statistics into encodings (no-op when frozen).
  absl::Status ComputeFromStatistics();
  /// Encodings straight from a tensor (parameters); no-op when frozen.
  absl::Status ComputeFromTensor(const at::Tensor& t);
  /// Sets encodings; `freeze` keeps them through later calibration.
  absl::Status SetEncodings(std::vector<Encoding> encodings, bool freeze);

  /// A new grid (and channel axis) for this quantizer: its encodings are dropped and
  /// must be computed again; the statistics calibration collected are kept, so an
  /// activation's encodings can be recomputed without another calibration pass.
  void Respec(QuantSpec spec, int axis);

  /// Quantize-dequantize `x`. Requires encodings; identity when disabled. With
  /// `inplace`, a per-tensor quantizer may overwrite `x` (the caller owns it).
  at::Tensor Apply(const at::Tensor& x, bool inplace = false) const;

 private:
  QuantSpec spec_;
  CalibrationMethod method_;
  double percentile_;
  int axis_;
  bool enabled_ = true;
  bool frozen_ = false;
  std::vector<Encoding> encodings_;
  std::optional<EncodingAnalyzer> analyzer_;
  // Per-channel scale / zero point as tensors, built once per SetEncodings.
  mutable at::Tensor scale_, zero_point_;
};

}  // namespace qopt
