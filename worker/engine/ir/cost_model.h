// What a model costs at a given input shape: multiply-accumulates, parameters and bytes,
// per layer and in total. Compression and mixed precision weigh their choices with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

struct LayerCost {
  std::string layer;        // node name
  std::string op_type;      // "Conv", "Gemm", "Relu", ...
  int64_t macs = 0;         // multiply-accumulates of one run at the inferred shapes
  int64_t parameters = 0;   // elements of the layer's weight and bias (what PyTorch counts)
  int64_t parameter_bytes = 0;
  int64_t activation_bytes = 0;  // bytes of the tensors the layer outputs
};

struct ModelCost {
  std::vector<LayerCost> layers;  // program order, every live node with a tensor output
  int64_t macs = 0;
  int64_t parameters = 0;
  int64_t parameter_bytes = 0;
  int64_t activation_bytes = 0;
  /// Nodes inside blocks the example run did not reach (a branch not taken): not counted.
  int unreached_layers = 0;
};

/// Counts the cost of `graph` at the shapes shape inference recorded (run InferShapes
/// first). MACs: convolutions (output elements × input channels per group × kernel size),
/// linear layers and matrix products (output elements × reduced dimension); other ops
/// count none. Fails with FailedPrecondition naming the first top-level layer whose shapes
/// are unknown.
absl::StatusOr<ModelCost> CountCost(const Graph& graph);

}  // namespace qopt
