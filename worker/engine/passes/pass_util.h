// Small graph queries the passes share.
#pragma once

#include <cstdint>
#include <optional>

#include "ir/graph.h"

namespace qopt {

/// The only live consumer of value `vid`, or -1 (several, none, or a graph output): a
/// pass may rewrite a value's producer only when nothing else sees the value.
int SoleConsumer(const Graph& g, int vid);

/// The groups of a convolution node (1 for a linear layer), or nullopt when they are not
/// a constant.
std::optional<int64_t> ConvGroups(const Graph& g, const Node& n);

}  // namespace qopt
