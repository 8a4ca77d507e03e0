// AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
// Quantization", arXiv 2004.10568).
//
// For each conv / transposed conv / linear layer with a quantized weight, in forward
// order, AdaRound learns whether each weight rounds down or up. The soft weight is
//   W~ = s * (clamp(floor(W / s) + h(V) + z, 0, n) - z),  h(V) = clamp(sigmoid(V) (zeta -
//   gamma) + gamma, 0, 1), zeta = 1.1, gamma = -0.1,
// and Adam on V minimises || layer(x_q; W~) - layer(x; W) ||^2 (summed over output
// channels, averaged over samples and positions; a linear layer's channels are its last
// dimension) + reg * sum(1 - |2 h(V) - 1|^beta), where x_q is the layer's input in the
// model whose earlier layers are already rounded (activations
// quantized only with `quantize_activations`) and the target is the floating-point
// layer's output on the floating-point model's input. The regulariser starts after a warm
// start and its beta is annealed linearly from beta_start to beta_end. Finally each weight
// rounds up where V >= 0; the rounded weights are written into the graph (the originals
// stay the sim's floating-point reference) and their encodings are frozen, so export
// produces exactly these weights.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "quant/quantsim.h"

namespace qopt {

struct AdaRoundProgress {
  int layer_index = 0;  // 0-based
  int num_layers = 0;
  std::string layer;
  int iteration = 0;  // done so far in this layer
  int num_iterations = 0;  // the layer's ceiling when it stops on convergence
  bool stops_on_convergence = false;

  /// The share of the whole AdaRound run done, in [0, 1] (a layer that converges early
  /// jumps to the next one's start).
  double Fraction() const;
  /// "layer1.0.conv1 (2/21) iteration 150/15000", with " (stops once converged)" when
  /// num_iterations is only the ceiling.
  std::string Describe() const;
};

struct AdaRoundOptions {
  /// Adam iterations per layer; 0 = 10 000 for weights of 8 bits or more, 15 000 below.
  /// With `stop_on_convergence`, the ceiling.
  int num_iterations = 0;
  /// Anneal each layer over `schedule_iterations` and stop it once it has converged (see
  /// AdaRoundLayerResult::stop); false = run all `num_iterations`, annealing over them
  /// (AIMET's fixed schedule).
  bool stop_on_convergence = true;
  /// The warm start and annealing length with `stop_on_convergence`; 0 =
  /// kDefaultSchedule (at most `num_iterations`).
  int schedule_iterations = 0;
  static constexpr int kDefaultSchedule = 2000;
  double reg_param = 0.01;
  double beta_start = 20.0;
  double beta_end = 2.0;
  double warm_start = 0.2;
  double learning_rate = 1e-3;
  /// Samples per iteration; 0 = kDefaultBatchSize.
  int batch_size = 0;
  bool quantize_activations = false;
  /// Cached layer inputs and targets beyond this many bytes go to a temporary file that
  /// the kernel pages in and out, instead of memory.
  int64_t memory_budget_bytes = int64_t{1} << 30;
  std::vector<std::string> skip_layers;
  uint64_t seed = 1;
  /// Called every 1 % of a layer's iterations, at least every 0.25 s, and after each
  /// layer; a non-OK status (Cancelled) stops AdaRound and is returned. Layers finished
  /// by then keep their rounding.
  std::function<absl::Status(const AdaRoundProgress&)> on_progress;

  static constexpr int kDefaultBatchSize = 16;
};

struct AdaRoundLayerResult {
  std::string layer;
  int64_t weights = 0;
  int iterations = 0;  // run
  int max_iterations = 0;  // the ceiling
  /// Why the layer stopped where it did:
  ///  - kConverged: after the warm start, at the end of a check window of
  ///    kConvergenceWindow (or 1/20 of the schedule, if longer) iterations, no rounding
  ///    decision (V >= 0) changed during the window, the mean reconstruction loss of the
  ///    window is within kConvergedLossChange of the previous window's, and either at
  ///    least kConvergedHardFraction of the rounding variables sit at 0 or 1 -- where
  ///    h(V) is clamped and its gradient is zero, so they cannot move again -- or, with
  ///    annealing over, that held for kSettledWindows windows in a row (a few variables
  ///    that stay soft, as in a small first layer, no longer change the rounding);
  ///  - kCeiling: num_iterations ran out first;
  ///  - kFixedSchedule: stop_on_convergence was off.
  enum class Stop { kConverged, kCeiling, kFixedSchedule };
  Stop stop = Stop::kFixedSchedule;
  /// The first iteration at which the stop rule held (also checked on a fixed schedule);
  /// 0 = never.
  int converged_at = 0;
  /// The share of rounding variables at 0 or 1 when it stopped.
  double hard_fraction = 0.0;
  /// "converged at 3100: 99.97 % of rounding variables at 0 or 1, no decision changed
  /// and the loss moved 0.4 % over the last 150 iterations".
  std::string stop_reason;
  static constexpr int kConvergenceWindow = 100;
  static constexpr double kConvergedHardFraction = 0.999;
  static constexpr double kConvergedLossChange = 0.02;
  static constexpr int kSettledWindows = 5;
  /// Reconstruction error (the loss's first term) over the cached samples, with nearest
  /// rounding and with the learned rounding.
  double nearest_error = 0.0;
  double adaround_error = 0.0;
  /// Weights rounded the other way than nearest rounding would.
  int64_t flipped = 0;
  double seconds = 0.0;
  /// Whether the layer's cached samples went to a temporary file (memory budget).
  bool spilled = false;
  /// The reconstruction error with the soft rounding being learned, on the sampled batch of
  /// evenly spaced iterations (1-based; kCurvePoints over the schedule, thinned to at most
  /// twice that many over a longer run): how the optimisation went.
  std::vector<int> curve_iterations;
  std::vector<double> curve_error;
  static constexpr int kCurvePoints = 50;
};

/// "converged", "ceiling" or "fixed_schedule" (the report's `stop` label).
const char* AdaRoundStopName(AdaRoundLayerResult::Stop stop);

/// Runs AdaRound over `sim`'s quantized conv / transposed conv / linear weights. `batches` are model inputs
/// (calibration data); `sim` must have its parameter encodings (activation encodings too
/// with quantize_activations). The layers run on the graph's device; the cached layer
/// inputs and targets stay in host memory (or the spill file) and each iteration's batch
/// is moved to the device.
absl::StatusOr<std::vector<AdaRoundLayerResult>> ApplyAdaRound(Graph& graph, QuantSim& sim,
                                                               const std::vector<at::Tensor>& batches,
                                                               const AdaRoundOptions& options);

/// One layer, for tests and benchmarks: learns the rounding of `weight` (quantized by
/// `quantizer`) for `layer` (a conv / transposed conv / linear node of `graph`) from inputs `x` and float
/// targets `y`; returns the rounded weight. `result` receives the layer's figures.
absl::StatusOr<at::Tensor> AdaRoundLayer(const Graph& graph, const Node& layer, const at::Tensor& weight,
                                         const at::Tensor& bias, const Quantizer& quantizer,
                                         const at::Tensor& x, const at::Tensor& y,
                                         const AdaRoundOptions& options, int layer_index, int num_layers,
                                         AdaRoundLayerResult* result);

/// The layer's own op (conv / transposed conv / linear with the node's stride, padding, ...) on `x` with the
/// given weight and bias; undefined `bias` = none.
absl::StatusOr<at::Tensor> LayerForward(const Graph& graph, const Node& layer, const at::Tensor& x,
                                        const at::Tensor& weight, const at::Tensor& bias);

}  // namespace qopt
