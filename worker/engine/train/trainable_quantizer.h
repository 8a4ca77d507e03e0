// Quantizers that train: quantize-dequantize with gradients for the tensor (straight
// through within the grid, zero outside) and, with range learning, for the grid itself.
//
// Every mode computes its forward pass with torch's fake-quantize kernels, so what trains
// is exactly what the simulation and the exported model compute once the trained grid is
// written back as encodings.
#pragma once

#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "quant/encoding.h"
#include "quant/quantizer.h"

namespace qopt {

enum class RangeLearning {
  /// Activation encodings stay as calibrated; weight encodings follow the weights.
  kOff,
  /// The encodings' min and max train (symmetric grids: the max), with the gradients of
  /// scale = (max - min) / steps and offset = round(min / scale) through the
  /// straight-through estimator: AIMET's range learning.
  kAimet,
  /// The scale trains with LSQ's gradient scale 1 / sqrt(N * Qp) (Esser et al. 2020);
  /// weights start at 2 * mean|w| / sqrt(Qp), activations at their calibrated scale.
  kLsq,
};

absl::StatusOr<RangeLearning> ParseRangeLearning(std::string_view name);
std::string_view RangeLearningName(RangeLearning mode);

class TrainableQuantizer {
 public:
  /// From a quantizer of the simulation that has encodings. `param` is the parameter
  /// tensor for a parameter quantizer (its starting point for LSQ, and what off-mode
  /// encodings follow), undefined for an activation. Range tensors live on `param`'s
  /// device, or `device` for activations.
  static absl::StatusOr<TrainableQuantizer> Create(const Quantizer& q, RangeLearning mode,
                                                   const at::Tensor& param, c10::Device device);

  /// Quantize-dequantize `x` with gradients. Off-mode weight quantizers first recompute
  /// their encodings from `x` (which is the current weight).
  at::Tensor Apply(const at::Tensor& x) const;

  /// The tensors that learn (empty without range learning, or for frozen encodings).
  std::vector<at::Tensor> ranges() const;
  /// Keeps the learned grid valid after an optimizer step: zero inside [min, max], a
  /// positive scale.
  void Clamp();
  /// The grid Apply uses now, as encodings (recomputed from `param` for off-mode weight
  /// quantizers).
  absl::StatusOr<std::vector<Encoding>> Encodings(const at::Tensor& param) const;
  /// Whether Encodings() come from learning (or were frozen) rather than from the tensor.
  bool fixed_grid() const { return mode_ != RangeLearning::kOff || frozen_ || !is_param_; }

 private:
  TrainableQuantizer() = default;
  /// Scale and zero point of the learned grid, both float32 with gradients.
  std::pair<at::Tensor, at::Tensor> LearnedGrid() const;

  QuantSpec spec_;
  CalibrationMethod method_ = CalibrationMethod::kMinMax;
  double percentile_ = 100.0;
  int axis_ = -1;
  RangeLearning mode_ = RangeLearning::kOff;
  bool is_param_ = false;
  bool frozen_ = false;
  bool symmetric_ = false;
  int64_t num_steps_ = 255;
  // Off (or frozen): the fixed grid. Lsq: `scale_` learns, `zero_point_` is fixed.
  // Aimet: `max_` learns, and `min_` too unless the grid is symmetric (then the offset
  // is fixed at `fixed_offset_`).
  std::vector<Encoding> fixed_;
  at::Tensor scale_, zero_point_;
  at::Tensor min_, max_;
  int64_t fixed_offset_ = 0;
  int64_t lsq_positive_levels_ = 1;  // Qp of LSQ's gradient scale
};

}  // namespace qopt
