// Where a simulation loses accuracy (AIMET's QuantAnalyzer, with more): the score of the
// floating-point model and of the simulation with weights only, activations only and both;
// per quantizer group, the score with only that group quantized and with only that group
// in floating point; per group the MSE and SQNR of its output in the simulation against
// the floating-point model; weight ranges per output channel, activation ranges, and
// histograms of weights and activations.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "analysis/sim_scorer.h"
#include "data/dataset.h"
#include "quant/quantsim.h"

namespace qopt {

/// A layer's quantizers, switched and scored together: the weight and bias quantizers of
/// a layer with the activation quantizer that ends it (after a ReLU or clip the layer
/// feeds alone, as in a supergroup), or an activation quantizer of its own (an add, a
/// pool, a model input).
struct QuantizerGroup {
  std::string layer;            // the node that names the group ("input" for model inputs)
  std::string op_type;          // "Conv", "Gemm", "Add", ... ("Input")
  std::vector<int> params;      // value ids with parameter quantizers
  std::vector<int> activations; // value ids with activation quantizers
  int output = -1;              // the value the group's output error is measured on
};

/// Each output channel's (dim 0) minimum and maximum of `weight`.
void WeightRangePerChannel(const at::Tensor& weight, std::vector<double>* min, std::vector<double>* max);

/// The groups of `sim`'s quantizers in forward order; every quantizer is in one group.
std::vector<QuantizerGroup> QuantizerGroups(const QuantSim& sim);

/// Counts of values in `bins` equal bins over [lo, hi]; values outside fall in below /
/// above.
struct ValueHistogram {
  double lo = 0.0, hi = 0.0;
  std::vector<int64_t> counts;
  int64_t below = 0, above = 0;
};

constexpr double kNotMeasured = std::numeric_limits<double>::quiet_NaN();

struct LayerAnalysis {
  QuantizerGroup group;
  /// Scores with only this group quantized / only this group in floating point.
  double only_enabled = kNotMeasured, only_disabled = kNotMeasured;
  /// The group's output in the full simulation against the floating-point model.
  double output_mse = kNotMeasured, output_sqnr_db = kNotMeasured;
  /// The weight's range per output channel (empty without a weight quantizer).
  std::vector<double> weight_min, weight_max;
  /// The range the floating-point output took, and the range its quantizer's grid
  /// covers (NaN without an activation quantizer).
  double activation_min = kNotMeasured, activation_max = kNotMeasured;
  double encoding_min = kNotMeasured, encoding_max = kNotMeasured;
  ValueHistogram weights, activations;  // empty counts when the group has none
};

struct QuantAnalysis {
  /// "top1" when the batches are labelled and the model gives (N, classes) logits,
  /// otherwise "output_sqnr_db" (against the floating-point model; capped at kMaxSqnrDb).
  std::string score;
  int64_t eval_samples = 0;
  int64_t activation_samples = 0;
  double fp32 = kNotMeasured;  // NaN for output SQNR (the reference itself)
  double quantized = 0.0, weights_only = 0.0, activations_only = 0.0;
  std::vector<LayerAnalysis> layers;  // forward order
  int evaluations = 0;                // runs of the simulation over the batches
  double eval_seconds = 0.0;          // spent in them
  double seconds_per_evaluation = 0.0;
};

struct AnalysisOptions {
  size_t num_batches = 0;            // batches to score on (0 = all)
  bool per_layer = true;             // only-enabled / only-disabled scores per group
  int64_t activation_samples = 256;  // samples for output errors, ranges and histograms
  int histogram_bins = 64;
  TaskMetric metric = TaskMetric::kAuto;  // the score's figure (see SimScorer)
};

struct AnalysisCallbacks {
  std::function<absl::Status(double fraction, const std::string& message)> progress;
  /// Called as each group's scores are known (the ranges and errors come first).
  std::function<absl::Status(const LayerAnalysis& layer)> on_layer;
};

/// Analyzes calibrated `sim` on `batches`. The sim's quantizers are switched during the
/// analysis and left as they were (also on error). Fails with FailedPrecondition for a
/// sim without encodings, InvalidArgument for empty batches or options out of range.
absl::StatusOr<QuantAnalysis> AnalyzeQuantization(QuantSim& sim, const std::vector<Batch>& batches,
                                                  const AnalysisOptions& options,
                                                  const AnalysisCallbacks& callbacks = {});

}  // namespace qopt
