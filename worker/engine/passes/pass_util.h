// Small graph queries the passes share.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

/// The only live consumer of value `vid`, or -1 (several, none, or a graph output): a
/// pass may rewrite a value's producer only when nothing else sees the value.
int SoleConsumer(const Graph& g, int vid);

/// Input slot of a convolution node's `groups` argument (aten::_convolution or convNd).
int ConvGroupsSlot(const Node& n);

/// The groups of a convolution node (1 for a linear layer), or nullopt when they are not
/// a constant.
std::optional<int64_t> ConvGroups(const Graph& g, const Node& n);

/// True for a convolution with constant weights whose every group is one channel
/// (groups == out channels, one input channel per group).
bool IsDepthwiseConv(const Graph& g, const Node& n);

/// A convolution's stride (slot 3), padding (4) or dilation (5) as a constant pair ([s]
/// counts as [s, s]), or nullopt.
std::optional<std::vector<int64_t>> ConvIntPair(const Graph& g, const Node& n, size_t slot);

/// The bounds of a clip node (ReLU6, hardtanh, clamp with constant bounds, scalars or
/// per channel) as float64 vectors: one element for a bound shared by every channel,
/// -inf / +inf where a side is open. nullopt for any other node.
struct ClipRange {
  at::Tensor lo;
  at::Tensor hi;
  /// True when the lower bound is 0 on every channel: a rectifier with a ceiling, which
  /// positive per-channel scales and shifts below the ceiling pass through.
  bool Rectifies() const;
};
std::optional<ClipRange> ClipBounds(const Graph& g, const Node& n);

/// The bounds of a ReLU ([0, +inf]) or of a clip whose bounds are each one number (a
/// scalar, None, or a one-element float tensor), read without building tensors; nullopt
/// for per-channel bounds and any other node.
std::optional<std::pair<double, double>> SharedClipBounds(const Graph& g, const Node& n);

/// Makes clip node `n` clip to [0, hi] per channel (`hi`: one value per channel, float64)
/// as an ordinary `aten::clamp(x, min, max)` with its bounds as the node's parameters
/// "clip_min" and "clip_max", shaped to broadcast over dim 1 of a rank-`rank` input. A
/// node that is not yet such a clamp is replaced by one of the same name. Returns the id of
/// the clip node.
absl::StatusOr<int> SetClipCeiling(Graph& g, Node& n, const at::Tensor& hi, int64_t rank);

}  // namespace qopt
