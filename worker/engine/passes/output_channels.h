// Changing a layer's channel count with its consumers updated: the edit channel pruning
// and its reconstruction make.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

/// Keeps only output channels `keep` (ascending, distinct) of conv / linear layer `layer`,
/// and removes the matching channels downstream: batch norms and per-channel clips slice
/// their parameters, ReLU / clips / dropout / pooling pass the channels through, a
/// depthwise convolution loses the same channels (and passes them on), a flatten maps each
/// channel to its block of features (needs shapes, see ir/shape_inference.h), and the
/// next convolution or linear layer drops the matching input channels. Output statistics
/// of the layer follow. Recorded shapes of the values that changed are cleared; infer
/// shapes again for new ones.
/// Fails, leaving the graph unchanged, with FailedPrecondition naming the consumer when the
/// channels reach anything else (an add or concat that merges them with another branch, a
/// model output), and InvalidArgument for bad indices.
absl::Status KeepOutputChannels(Graph& graph, Node& layer, const std::vector<int64_t>& keep);

/// The convolutions and linear layers whose input channels KeepOutputChannels(layer)
/// would remove (node ids): those that read `layer`'s channels through the ops it passes
/// them through. Fails as KeepOutputChannels would.
absl::StatusOr<std::vector<int>> ChannelReaders(const Graph& graph, const Node& layer);

}  // namespace qopt
