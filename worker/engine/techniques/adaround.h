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
  int num_iterations = 0;

  /// The share of the whole AdaRound run done, in [0, 1].
  double Fraction() const;
  /// "layer1.0.conv1 (2/21) iteration 150/15000".
  std::string Describe() const;
};

struct AdaRoundOptions {
  /// Adam iterations per layer; 0 = 10 000 for weights of 8 bits or more, 15 000 below.
  int num_iterations = 0;
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
  int iterations = 0;
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
  /// `kCurvePoints` evenly spaced iterations (1-based): how the optimisation went.
  std::vector<int> curve_iterations;
  std::vector<double> curve_error;
  static constexpr int kCurvePoints = 50;
};

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
