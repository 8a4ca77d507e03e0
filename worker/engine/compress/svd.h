// Tensor decomposition of a layer into two smaller ones by a truncated SVD of its weight
// (Zhang et al., "Accelerating Very Deep Convolutional Networks", and AIMET's spatial and
// weight SVD):
//   spatial SVD: conv (m, n, h, w) -> conv (k, n, h, 1) then conv (m, k, 1, w); the first
//                takes the vertical stride, padding and dilation, the second the
//                horizontal ones and the bias. Max rank min(n·h, m·w).
//   weight SVD:  conv (m, n, h, w) -> conv (k, n, h, w) then conv (m, k, 1, 1) (the first
//                keeps stride, padding and dilation; the second the bias), and linear
//                (m, n) -> linear (k, n) then linear (m, k). Max rank min(m, n·h·w).
// At the max rank the pair computes what the layer did (up to float rounding); below it,
// the best rank-k approximation of the weight in the Frobenius norm. The new layers are
// named `<layer>.0` and `<layer>.1` (exported as modules of those names).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

enum class SvdKind { kSpatial, kWeight };

/// What a layer costs, by the compression's cost metric.
enum class CostMetric { kMacs, kMemory };

/// How splitting `layer` would cost: its cost now and per unit of rank after the split,
/// at the shapes shape inference recorded (ir/shape_inference.h).
struct SvdCost {
  int64_t max_rank = 0;
  int64_t original = 0;  // the layer's MACs or parameters (weights; the bias stays)
  int64_t per_rank = 0;  // the pair's, for each unit of rank
};

/// The reason `layer` cannot be split this way ("" when it can): not a 2-D convolution
/// (or, for weight SVD, a linear layer) with constant weights, one group, constant
/// stride / padding / dilation; a 1×1 (or k×1) kernel for spatial SVD; shapes unknown.
std::string SvdSkipReason(const Graph& graph, const Node& layer, SvdKind kind);

/// The cost figures of splitting `layer` (SvdSkipReason must be "").
SvdCost SvdCostOf(const Graph& graph, const Node& layer, SvdKind kind, CostMetric metric);

/// The rank at which the pair costs at most `ratio` of the layer (at least one unit),
/// rounded up to a multiple of `multiplicity`, at most the max rank; 0 when that rank
/// saves nothing (the pair would cost as much as the layer or more).
int64_t SvdRankForRatio(const SvdCost& cost, double ratio, int64_t multiplicity);

/// The SVDs of weights split before: splitting the same weight tensor again, at any rank,
/// reuses its decomposition (the slow part for wide layers).
class SvdCache {
 public:
  struct Entry {
    at::Tensor weight;  // held, so its address is not reused while cached
    SvdKind kind;
    at::Tensor u, s, vh;  // float64, CPU
  };
  const Entry& Get(const at::Tensor& weight, SvdKind kind);

 private:
  std::map<std::pair<const void*, SvdKind>, Entry> entries_;
};

/// Replaces `layer` by its rank-`rank` pair. `exact` false: the pair has the right shapes
/// but zero weights (for counting costs without computing an SVD). Fails with
/// InvalidArgument for a rank outside 1..max rank or a layer SvdSkipReason rejects.
absl::Status SplitBySvd(Graph& graph, const std::string& layer, SvdKind kind, int64_t rank, bool exact = true,
                        SvdCache* cache = nullptr);

}  // namespace qopt
