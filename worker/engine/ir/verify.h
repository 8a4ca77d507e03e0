// The IR's invariants, checked after every pass in tests.
#pragma once

#include "absl/status/status.h"
#include "ir/graph.h"

namespace qopt {

/// Checks that `graph` is well formed; returns Internal naming the first broken rule:
/// - ids match positions; every live node sits once in the block its `parent` names, and
///   no erased node is listed in a block;
/// - every input of a live node, block output and graph output is defined before use
///   (a graph or enclosing block input, a constant, or an output of an earlier node of
///   this block or an enclosing one);
/// - producer and consumer links agree with the nodes' inputs and outputs;
/// - each parameter a node names is one of its inputs and holds a constant tensor whose
///   dtype and shape match what the value records;
/// - live node names are unique;
/// - prim::If has one input, two blocks and as many outputs as each block; prim::Loop has
///   (trip count, condition, carried...) inputs and a body taking (iteration, carried...)
///   and returning (condition, carried...);
/// - every other op resolves to a TorchScript operator for its inputs' types, with as many
///   outputs as the node has.
absl::Status Verify(const Graph& graph);

}  // namespace qopt
