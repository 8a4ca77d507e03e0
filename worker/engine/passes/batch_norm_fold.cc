#include "passes/batch_norm_fold.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "ir/rewriter.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {
namespace internal_bn_fold {

bool ConstBool(const Graph& g, int vid, bool fallback) {
  const auto& c = g.values[vid].constant;
  return c && c->isBool() ? c->toBool() : fallback;
}

}  // namespace internal_bn_fold

absl::StatusOr<std::vector<FoldedPair>> FoldBatchNorms(Graph& graph) {
  using namespace internal_bn_fold;
  std::vector<FoldedPair> folded;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    Node& bn = graph.nodes[i];
    if (bn.removed || bn.kind != OpKind::kBatchNorm) continue;
    const int producer = graph.values[bn.inputs[0]].producer;
    if (producer < 0) continue;
    Node& layer = graph.nodes[producer];
    if (layer.removed || (layer.kind != OpKind::kConv && layer.kind != OpKind::kLinear)) continue;
    if (SoleConsumer(graph, layer.outputs[0]) != bn.id) continue;
    if (ConstBool(graph, bn.inputs[5], true)) continue;  // training-mode batch norm
    const auto& eps_c = graph.values[bn.inputs[7]].constant;
    if (!eps_c || !eps_c->isDouble()) continue;
    const int mean_id = bn.Param("running_mean"), var_id = bn.Param("running_var");
    if (mean_id < 0 || var_id < 0) continue;

    at::Tensor w = graph.values[layer.Param("weight")].constant->toTensor();
    const int64_t out_channels = w.size(0);
    auto param_or = [&](const Node& n, const char* role, double fill) {
      const int id = n.Param(role);
      if (id >= 0) return graph.values[id].constant->toTensor().to(at::kDouble);
      return at::full({out_channels}, fill, w.options().dtype(at::kDouble));
    };
    const at::Tensor mean = param_or(bn, "running_mean", 0.0);
    const at::Tensor var = param_or(bn, "running_var", 1.0);
    const at::Tensor gamma = param_or(bn, "weight", 1.0);
    const at::Tensor beta = param_or(bn, "bias", 0.0);
    const at::Tensor bias = param_or(layer, "bias", 0.0);
    if (mean.numel() != out_channels) {
      return absl::InvalidArgumentError(absl::StrCat(
          bn.name, ": has ", mean.numel(), " channels but ", layer.name, " has ", out_channels));
    }
    const at::Tensor scale = gamma / at::sqrt(var + eps_c->toDouble());
    std::vector<int64_t> shape(w.dim(), 1);
    shape[0] = out_channels;
    const at::Tensor new_w = (w.to(at::kDouble) * scale.reshape(shape)).to(w.scalar_type());
    const at::Tensor new_b = ((bias - mean) * scale + beta).to(w.scalar_type());

    graph.SetParam(layer, "weight", 1, new_w);
    graph.SetParam(layer, "bias", 2, new_b);
    graph.bn_stats[layer.id] = ChannelStats{beta.clone(), gamma.abs()};
    folded.push_back({layer.name, bn.name});
    RETURN_IF_ERROR(Rewriter(graph).Replace(bn, {layer.outputs[0]}));
  }
  return folded;
}

}  // namespace qopt
