// The tensors of a graph that training changes: every layer's weight and bias (batch-norm
// scales and shifts included); other parameters (clip bounds, running statistics) stay.
#pragma once

#include <cstdint>
#include <functional>
#include <map>

#include <ATen/core/Tensor.h>

#include "ir/graph.h"
#include "train/trainer.h"

namespace qopt {

struct GraphParams {
  std::map<int, at::Tensor> leaves;  // parameter value id -> the tensor that learns
  ParamGroup weights{"weights"};     // with weight decay
  ParamGroup biases{"biases"};       // without
  int weight_tensors = 0;
  int64_t weight_values = 0;
  int bias_tensors = 0;
};

/// Leaf copies (requiring gradients) of the floating-point weights and biases of `graph`'s
/// live layers, grouped with `learning_rate` (weights also `weight_decay`). `on_param`,
/// when set, sees each parameter's current tensor first.
GraphParams CollectGraphParams(const Graph& graph, double learning_rate, double weight_decay,
                               const std::function<void(int vid, const at::Tensor&)>& on_param = nullptr);

/// Writes leaves (parameter value id -> tensor) back into the graph as its parameters
/// (detached copies).
void WriteGraphParams(Graph& graph, const std::map<int, at::Tensor>& leaves);

}  // namespace qopt
