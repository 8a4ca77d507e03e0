// Batch-norm folding: a batch norm that directly follows a conv or linear layer (and is
// that layer's only consumer) is folded into the layer's weight and bias and removed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

struct FoldedPair {
  std::string layer;       // conv / linear that absorbed the batch norm
  std::string batch_norm;  // removed batch norm
};

/// Folds every foldable batch norm in `graph`, recording its beta and |gamma| as the
/// layer's output statistics (Graph::bn_stats). The model's output is unchanged up to
/// float rounding. Returns the pairs folded; batch norms that cannot be folded (no conv /
/// linear producer, producer output used elsewhere) stay.
absl::StatusOr<std::vector<FoldedPair>> FoldBatchNorms(Graph& graph);

}  // namespace qopt
