// Compressing a model layer by layer with per-layer ratios chosen greedily (AIMET's greedy
// compression-ratio selection): each compressible layer is compressed alone, on a copy of
// the model, at candidate ratios k/N and the copy scored (the eval dictionary); then a
// binary search over a common score threshold gives each layer its most compressed
// candidate that scores at least the threshold, at the highest threshold whose model
// meets the target cost. Ratios can also be given per layer, by hand or as overrides.
// A compression ratio is a cost after / before: of the whole model for the target, of one
// layer's own MACs (or parameters) for a layer's ratio.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "compress/channel_pruning.h"
#include "compress/svd.h"
#include "ir/cost_model.h"
#include "ir/graph.h"

namespace qopt {

enum class CompressionMethod { kSpatialSvd, kWeightSvd, kChannelPruning };

/// "spatial_svd", "weight_svd", "channel_pruning".
std::string MethodName(CompressionMethod method);

/// One candidate of one layer: the score of the model with only this layer compressed
/// at `ratio`, and that model's cost.
struct Candidate {
  double ratio = 1.0;
  double score = 0.0;
  int64_t cost = 0;
};

struct EvalDictionary {
  std::string method;       // MethodName
  std::string cost_metric;  // "macs" | "memory"
  std::string score;        // what the score is: "top1", "top1_agreement", "output_sqnr_db"
  int64_t eval_samples = 0;
  double original_score = 0.0;
  int64_t original_cost = 0;
  std::map<std::string, std::vector<Candidate>> layers;  // candidates by ascending ratio
};

/// The dictionary as the JSON artifact a later job takes back, and read from it (errors
/// name what is wrong with the file).
std::string EvalDictionaryToJson(const EvalDictionary& dictionary);
absl::StatusOr<EvalDictionary> EvalDictionaryFromJson(const std::string& text);

struct CompressionOptions {
  CompressionMethod method = CompressionMethod::kSpatialSvd;
  CostMetric metric = CostMetric::kMacs;
  /// Whole-model cost after / before, in (0, 1].
  double target_ratio = 0.5;
  /// Candidates k / N for k = 1 .. N - 1.
  int num_candidates = 10;
  /// false: only `layer_ratios` are applied, nothing is searched.
  bool greedy = true;
  /// Fixed ratios of these layers (in (0, 1]); the search chooses the others.
  std::map<std::string, double> layer_ratios;
  std::vector<std::string> exclude_layers;
  /// SVD ranks and kept channel counts are rounded up to a multiple of this.
  int64_t multiplicity = 1;
  ChannelPruningOptions pruning;
  /// Scores from an earlier job: candidates found there are not evaluated again.
  std::optional<EvalDictionary> saved;
  /// The model's input shapes at batch 1, for costs.
  std::vector<std::vector<int64_t>> input_shapes;
};

struct CompressionCallbacks {
  /// Scores a candidate model (higher is better); the same data every time.
  std::function<absl::StatusOr<double>(const Graph&)> score;
  /// What `score` computes ("top1", ...) and on how many samples.
  std::string score_name;
  int64_t eval_samples = 0;
  std::function<absl::Status(double fraction, const std::string& message)> progress;
  std::function<absl::Status(const std::string& line)> log;
};

/// What happened to one conv / linear layer.
struct LayerOutcome {
  std::string layer;
  double ratio = 1.0;    // chosen (1 = unchanged)
  std::string how;       // "rank 12 of 48", "keeps 8 of 16 input channels"; "" when unchanged
  std::string skipped;   // why it cannot be compressed ("" when it can); excluded layers say so
  int64_t cost_before = 0, cost_after = 0;  // the layer's own (after: of what replaced it)
};

struct CompressionResult {
  std::unique_ptr<Graph> graph;
  std::optional<EvalDictionary> dictionary;  // greedy only
  std::vector<LayerOutcome> layers;          // program order
  ModelCost before, after;
  double threshold = 0.0;       // the chosen score threshold (greedy)
  int evaluations = 0;          // candidates scored in this run
  int reused = 0;               // candidates taken from the saved dictionary
  double search_seconds = 0.0;  // building the dictionary and choosing ratios
  double eval_seconds = 0.0;    // of which scoring candidates
};

/// Compresses a copy of `graph` (shapes inferred or not; it is not changed). `inputs`:
/// batches of model inputs for channel pruning's reconstruction. Errors: an unknown layer
/// in the options, a fixed ratio for a layer that cannot be compressed (with the reason),
/// nothing compressible, a target the candidates cannot reach.
absl::StatusOr<CompressionResult> CompressModel(const Graph& graph, const CompressionOptions& options,
                                                const std::vector<at::Tensor>& inputs,
                                                const CompressionCallbacks& callbacks);

}  // namespace qopt
