// Bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
// and Bias Correction"; AIMET's bias_correction): quantizing a layer's weight shifts the
// mean of its output, E[(W_q - W) x] != 0, and the shift compounds through the network.
// Adding the negated shift to the layer's bias removes it.
//
// Empirical correction measures the shift: bias += E_fp[y] - E_q[y], with y the layer's
// output before any activation or output quantizer, means per output channel over the
// calibration batches (batch and spatial positions). E_fp comes from the original
// floating-point model (one pass for all layers, before any bias changes); E_q from the
// simulated model with the corrections of earlier layers applied (one pass per layer).
//
// Analytical correction computes it from the statistics a folded batch norm left on the
// producer P of the layer's input (Graph::bn_stats: P's output ~ N(mean, std^2) per
// channel), through ReLU, ReLU6 (or the per-channel clip that cross-layer equalization
// leaves) and dropout: bias += -sum_{in, k} (W_q - W)[out, in, k] E[x_in]. Zero padding is
// ignored, as in AIMET. Layers without such statistics fall back to empirical correction.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "quant/quantsim.h"

namespace qopt {

struct BiasCorrectionOptions {
  enum class Mode { kEmpirical, kAnalytical };
  Mode mode = Mode::kEmpirical;
  /// Layer (node) names left alone.
  std::vector<std::string> skip_layers;
  /// Called after each corrected layer with the number done so far, the number to do and
  /// the layer's name; a non-OK status (e.g. Cancelled) stops the pass and is returned.
  /// The layers corrected before then keep their new biases.
  std::function<absl::Status(int done, int total, const std::string& layer)> on_layer;
};

struct BiasCorrectionResult {
  std::string layer;
  /// "empirical" or "analytical" (analytical falls back to empirical per layer when it
  /// lacks statistics).
  std::string method;
  /// Mean |correction| over output channels, in the layer's output units.
  double mean_abs_shift = 0.0;
};

/// Corrects the bias of every conv / linear layer that has a quantized weight in `sim`
/// (creating a bias where the layer had none), in forward order. `batches` are model
/// inputs (calibration data); `sim` must be built over `graph` and calibrated.
///
/// Updates the graph's parameters: an existing bias keeps its value id (its tensor is
/// replaced) so the sim's bias quantizer still applies, with encodings recomputed from the
/// new bias unless frozen; the sim's cached quantized parameters are refreshed, so
/// sim.Forward sees the corrected model. A bias created here has no quantizer (the sim's
/// placement is fixed at creation) and stays floating point. Graph::bn_stats is left as is:
/// it describes the floating-point model the corrections aim at.
///
/// Errors: InvalidArgument for a name in skip_layers that is no layer of the model, for
/// empty `batches` when some layer needs empirical correction, or for a sim over another
/// graph; FailedPrecondition when the sim is not calibrated; the status of `on_layer`
/// when it is not OK; a failing forward pass's error, naming the layer being corrected.
[[nodiscard]] absl::StatusOr<std::vector<BiasCorrectionResult>> CorrectBias(
    Graph& graph, QuantSim& sim, const std::vector<at::Tensor>& batches,
    const BiasCorrectionOptions& options);

/// E[clamp(X, lo, hi)] for X ~ N(mean, std^2), elementwise (float64). `lo` may be -inf and
/// `hi` +inf; std == 0 gives clamp(mean, lo, hi). Exposed for tests.
at::Tensor ClampedNormalMean(const at::Tensor& mean, const at::Tensor& std, double lo,
                             const at::Tensor& hi);

}  // namespace qopt
