// Dtype and shape of every value, from the model's example input shapes.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "ir/graph.h"

namespace qopt {

/// Sets `dtype` and `shape` of every tensor value the model computes for float32 inputs
/// of `input_shapes` (one per model input). The rule of every op is the op itself run on
/// meta tensors (shapes without data, no arithmetic); a model with an op that has no meta
/// kernel, or whose control flow depends on data, is run once on zeros on the CPU instead.
/// Values inside blocks that run did not reach (the branch not taken) keep no shape.
/// Parameters and constants get theirs from their tensors. Fails when the model cannot
/// run on such inputs, naming the node.
absl::Status InferShapes(Graph& graph, const std::vector<std::vector<int64_t>>& input_shapes);

}  // namespace qopt
