// Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free
// Quantization Through Weight Equalization and Bias Correction").
//
// Equalization finds chains of conv / linear layers joined through ReLU, ReLU6, dropout,
// max or average pooling, or nothing, where each link's output feeds only the next
// layer. For a pair (L1, L2) it scales L1's output channel i by 1/s_i and L2's input
// channel i by s_i with s_i = sqrt(r1_i / r2_i) (r = the channel's largest |weight|), so
// both ranges become sqrt(r1_i r2_i); L1 may be a depthwise conv (a depthwise-separable
// block whose input also feeds a skip). A conv -> depthwise conv -> conv triple is
// equalized jointly: with c = cbrt(r1 r2 r3) every range becomes c. Positive per-channel scales commute with
// ReLU; a ReLU6 does not, so instead of replacing it by ReLU (AIMET's choice, which
// changes the model) qopt clips each channel at 6 / s_i: the floating-point model's
// output is unchanged up to rounding.
//
// High-bias absorption then moves, for each pair with output statistics from a folded
// batch norm (mean beta, std gamma), a_i = max(0, beta_i - 3 gamma_i) out of L1's bias
// into L2's bias (b2 += W2 a; a ReLU6's clip moves down by a_i). This is exact for every
// input whose channel i stays above a_i (3 sigma under the batch norm's statistics) and,
// for a conv L2 with zero padding, away from the border.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

struct CleOptions {
  bool high_bias_absorption = true;
};

struct CleReport {
  /// Each equalized chain, by layer name, in order.
  std::vector<std::vector<std::string>> chains;
  /// Per chain, the smallest and largest channel scale s_i it applied.
  std::vector<std::pair<double, double>> scale_ranges;
  /// Layer pairs (L1, L2) where L1's bias was partly absorbed into L2's.
  std::vector<std::pair<std::string, std::string>> absorbed;
  /// ReLU6 nodes now clipping each channel at its own bound.
  std::vector<std::string> clipped_relu6;
};

absl::StatusOr<CleReport> CrossLayerEqualize(Graph& graph, const CleOptions& options = {});

}  // namespace qopt
