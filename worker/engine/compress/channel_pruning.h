// Channel pruning with weight reconstruction (He et al., "Channel Pruning for Accelerating
// Very Deep Neural Networks"; AIMET's channel pruning): a convolution keeps the input
// channels with the largest sum of squared weights, the layer that produces them loses
// the matching output channels (with the batch norms, activations and depthwise
// convolutions in between: passes/output_channels.h), and the convolution's weights are
// refitted by least squares so that, on sampled positions of real inputs, its output on
// the pruned model's input matches the original model's output.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

struct ChannelPruningOptions {
  /// Output positions sampled for the least-squares fit of each layer (AIMET's
  /// num_reconstruction_samples), from `samples_per_image` positions of each image.
  int64_t num_samples = 5000;
  int samples_per_image = 10;
  /// Kept channel counts are rounded up to a multiple of this.
  int64_t multiplicity = 1;
  uint64_t seed = 0;
};

/// How Prune refits the pruned layer's weights.
enum class Reconstruction {
  kNone,        // keep the remaining weights as they are (shapes only, for counting costs)
  kAlone,       // the graph is a copy of the original with only this layer pruned
  kInSequence,  // earlier layers of the graph may be pruned already: its inputs are sampled afresh
};

/// The reason `layer`'s input channels cannot be pruned ("" when they can): not a 2-D
/// convolution with constant weights and one group; its input is the model's; its input
/// channels do not come from one conv / linear layer (a residual add, a concat, ...); that
/// layer's channels also feed other layers; shapes unknown.
std::string PruningSkipReason(const Graph& graph, const Node& layer);

/// Input channels kept at `ratio`: max(1, int(channels · ratio)) rounded up to a multiple
/// of `multiplicity`, at most `channels`.
int64_t ChannelsForRatio(int64_t channels, double ratio, int64_t multiplicity);

class ChannelPruner {
 public:
  /// `original`: the model before pruning, whose layer outputs the refitted weights
  /// reproduce; `inputs`: batches of model inputs to sample from. Both must outlive the
  /// pruner.
  ChannelPruner(const Graph& original, const std::vector<at::Tensor>& inputs, ChannelPruningOptions options);

  /// Keeps `keep` input channels of `layer` in `graph` (a copy of the original, or one
  /// pruned further by earlier calls) and refits its weights as `mode` says. Layers keep
  /// their names, so `layer` names the same layer in both graphs.
  absl::Status Prune(Graph& graph, const std::string& layer, int64_t keep, Reconstruction mode);

  /// Positions sampled per layer so far (the last fit's count).
  int64_t samples() const { return samples_; }

 private:
  struct Normal;  // the least-squares problem: X^T X and X^T Y over the samples
  absl::StatusOr<Normal> Sample(const Graph& inputs_from, const Node& layer);

  const Graph& original_;
  const std::vector<at::Tensor>& inputs_;
  ChannelPruningOptions options_;
  std::string cached_layer_;
  std::shared_ptr<Normal> cached_;  // the original model's problem for `cached_layer_`
  int64_t samples_ = 0;
};

}  // namespace qopt
