#include "compress/svd.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>

#include "absl/strings/str_cat.h"
#include "ir/rewriter.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {
namespace {

const at::Tensor& Weight(const Graph& g, const Node& n) { return g.values[n.Param("weight")].constant->toTensor(); }

std::optional<at::Tensor> Bias(const Graph& g, const Node& n) {
  const int id = n.Param("bias");
  if (id < 0) return std::nullopt;
  return g.values[id].constant->toTensor();
}

// Creates conv2d(x, weight, bias, stride, padding, dilation, groups = 1) or linear(x,
// weight, bias) at the rewriter's insertion point, its weight and bias its parameters.
absl::StatusOr<Node*> CreateLayer(Rewriter& rw, bool conv, int x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation,
                                  const std::string& name) {
  const int w = rw.Parameter(weight);
  const int b = bias ? rw.Parameter(*bias) : rw.Constant(c10::IValue());
  std::vector<int> inputs = {x, w, b};
  if (conv) {
    for (const auto& pair : {stride, padding, dilation}) inputs.push_back(rw.Constant(pair));
    inputs.push_back(rw.Constant(int64_t{1}));
  }
  ASSIGN_OR_RETURN(Node* node, rw.Create(conv ? "aten::conv2d" : "aten::linear", inputs, name));
  rw.Own(*node, "weight", 1);
  if (bias) rw.Own(*node, "bias", 2);
  return node;
}

// The matrix whose SVD splits `weight`: spatial M[(n, y), (m, x)] = W[m, n, y, x], so that
// W = sum_k V[k, n, y] H[m, k, x]; weight M[m, (n, y, x)].
at::Tensor SplitMatrix(const at::Tensor& weight, SvdKind kind) {
  const at::Tensor w = weight.to(at::kDouble).cpu();
  const int64_t m = w.size(0);
  if (kind == SvdKind::kSpatial) return w.permute({1, 2, 0, 3}).reshape({w.size(1) * w.size(2), m * w.size(3)});
  return w.reshape({m, -1});
}

// The two factors of `weight` at rank k, shaped as the pair's weights: first, second.
std::pair<at::Tensor, at::Tensor> Factors(const at::Tensor& weight, SvdKind kind, int64_t k, bool exact,
                                          SvdCache* cache) {
  const auto options = weight.options();
  const bool conv = weight.dim() == 4;
  const int64_t m = weight.size(0), n = weight.size(1);
  const int64_t h = conv ? weight.size(2) : 1, w = conv ? weight.size(3) : 1;
  if (!exact) {
    if (kind == SvdKind::kSpatial) return {at::zeros({k, n, h, 1}, options), at::zeros({m, k, 1, w}, options)};
    if (!conv) return {at::zeros({k, n}, options), at::zeros({m, k}, options)};
    return {at::zeros({k, n, h, w}, options), at::zeros({m, k, 1, 1}, options)};
  }
  SvdCache local;
  const SvdCache::Entry& e = (cache ? *cache : local).Get(weight, kind);
  // M = U S Vh, split as (U sqrt(S)) (sqrt(S) Vh). Spatial: M's rows index the input side,
  // so U sqrt(S) is the first (vertical) layer; weight: M's rows are the output channels,
  // so sqrt(S) Vh is the first layer and U sqrt(S) the 1x1 second.
  const at::Tensor root = e.s.slice(0, 0, k).sqrt();
  const at::Tensor left = e.u.slice(1, 0, k) * root;                   // (rows of M, k)
  const at::Tensor right = e.vh.slice(0, 0, k) * root.unsqueeze(1);    // (k, columns of M)
  at::Tensor first, second;
  if (kind == SvdKind::kSpatial) {
    first = left.reshape({n, h, k}).permute({2, 0, 1}).unsqueeze(3);
    second = right.reshape({k, m, w}).permute({1, 0, 2}).unsqueeze(2);
  } else {
    first = conv ? right.reshape({k, n, h, w}) : right;
    second = conv ? left.reshape({m, k, 1, 1}) : left;
  }
  return {first.contiguous().to(options), second.contiguous().to(options)};
}

}  // namespace

std::string SvdSkipReason(const Graph& graph, const Node& layer, SvdKind kind) {
  if (layer.kind != OpKind::kConv && layer.kind != OpKind::kLinear) return "not a convolution or linear layer";
  if (layer.Param("weight") < 0) return "its weight is not a constant of the model";
  const at::Tensor& w = Weight(graph, layer);
  if (layer.kind == OpKind::kLinear) {
    if (kind == SvdKind::kSpatial) return "a linear layer (spatial SVD splits convolutions only)";
    if (w.dim() != 2) return "a linear layer whose weight is not 2-D";
  } else {
    if (w.dim() != 4) return "not a 2-D convolution";
    if (ConvGroups(graph, layer) != 1) return "a grouped or depthwise convolution";
    if (!ConvIntPair(graph, layer, 3) || !ConvIntPair(graph, layer, 4) || !ConvIntPair(graph, layer, 5)) {
      return "its stride, padding or dilation is not a constant pair";
    }
    if (kind == SvdKind::kSpatial && (w.size(2) == 1 || w.size(3) == 1)) {
      return absl::StrCat("its kernel is ", w.size(2), "x", w.size(3), ": nothing to split spatially");
    }
  }
  const Value& x = graph.values[layer.inputs[0]];
  const Value& y = graph.values[layer.outputs[0]];
  if (!x.shape || !y.shape) return "not reached by the example run (its shapes are unknown)";
  if (layer.kind == OpKind::kConv && (x.shape->size() < 3 || y.shape->size() < 3)) return "its input is not an image";
  return "";
}

SvdCost SvdCostOf(const Graph& graph, const Node& layer, SvdKind kind, CostMetric metric) {
  const at::Tensor& w = Weight(graph, layer);
  const std::vector<int64_t>& x = *graph.values[layer.inputs[0]].shape;
  const std::vector<int64_t>& y = *graph.values[layer.outputs[0]].shape;
  const int64_t m = w.size(0), n = w.size(1);
  const int64_t h = w.dim() == 4 ? w.size(2) : 1, kw = w.dim() == 4 ? w.size(3) : 1;
  // Output elements per output channel (rows of a linear layer's output).
  const int64_t per_channel = c10::multiply_integers(y) / std::max<int64_t>(m, 1);
  SvdCost cost;
  const bool macs = metric == CostMetric::kMacs;
  cost.original = (macs ? per_channel : 1) * m * n * h * kw;
  if (kind == SvdKind::kSpatial) {
    cost.max_rank = std::min(n * h, m * kw);
    // The first layer's output keeps the input's width: per_channel / Wo * W elements.
    const int64_t mid = per_channel / std::max<int64_t>(y.back(), 1) * x.back();
    cost.per_rank = macs ? mid * n * h + per_channel * m * kw : n * h + m * kw;
  } else {
    cost.max_rank = std::min(m, n * h * kw);
    cost.per_rank = macs ? per_channel * (n * h * kw + m) : n * h * kw + m;
  }
  return cost;
}

int64_t SvdRankForRatio(const SvdCost& cost, double ratio, int64_t multiplicity) {
  if (cost.per_rank <= 0 || cost.max_rank <= 0) return 0;
  const int64_t mult = std::max<int64_t>(multiplicity, 1);
  int64_t k = static_cast<int64_t>(std::ceil(ratio * static_cast<double>(cost.original) / cost.per_rank - 1e-9));
  k = std::max<int64_t>(k, 1);
  k = (k + mult - 1) / mult * mult;
  k = std::min(k, cost.max_rank);
  return k * cost.per_rank < cost.original ? k : 0;
}

const SvdCache::Entry& SvdCache::Get(const at::Tensor& weight, SvdKind kind) {
  const auto key = std::make_pair(static_cast<const void*>(weight.unsafeGetTensorImpl()), kind);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    auto [u, s, vh] = at::linalg_svd(SplitMatrix(weight, kind), /*full_matrices=*/false);
    it = entries_.emplace(key, Entry{weight, kind, u, s, vh}).first;
  }
  return it->second;
}

absl::Status SplitBySvd(Graph& graph, const std::string& layer_name, SvdKind kind, int64_t rank, bool exact,
                        SvdCache* cache) {
  Node* layer = graph.FindNode(layer_name);
  if (layer == nullptr) return absl::InvalidArgumentError(absl::StrCat("no layer named '", layer_name, "'"));
  if (const std::string why = SvdSkipReason(graph, *layer, kind); !why.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(layer_name, " cannot be split: ", why));
  }
  const at::Tensor weight = Weight(graph, *layer);
  const bool conv = layer->kind == OpKind::kConv;
  const int64_t max_rank = SvdCostOf(graph, *layer, kind, CostMetric::kMemory).max_rank;
  if (rank < 1 || rank > max_rank) {
    return absl::InvalidArgumentError(absl::StrCat(layer_name, ": rank ", rank, " is outside 1..", max_rank));
  }
  const auto [first_w, second_w] = Factors(weight, kind, rank, exact, cache);
  std::vector<int64_t> stride = {1, 1}, padding = {0, 0}, dilation = {1, 1};
  std::vector<int64_t> stride2 = {1, 1}, padding2 = {0, 0}, dilation2 = {1, 1};
  if (conv) {
    const auto s = *ConvIntPair(graph, *layer, 3), p = *ConvIntPair(graph, *layer, 4), d = *ConvIntPair(graph, *layer, 5);
    if (kind == SvdKind::kSpatial) {
      stride = {s[0], 1}, padding = {p[0], 0}, dilation = {d[0], 1};
      stride2 = {1, s[1]}, padding2 = {0, p[1]}, dilation2 = {1, d[1]};
    } else {
      stride = s, padding = p, dilation = d;
    }
  }
  Rewriter rw(graph);
  rw.SetInsertionPointBefore(*layer);
  ASSIGN_OR_RETURN(Node* first, CreateLayer(rw, conv, layer->inputs[0], first_w, std::nullopt, stride, padding,
                                            dilation, layer_name + ".0"));
  ASSIGN_OR_RETURN(Node* second, CreateLayer(rw, conv, first->outputs[0], second_w, Bias(graph, *layer), stride2,
                                             padding2, dilation2, layer_name + ".1"));
  // Shapes: the output's stays; the middle one is the first layer's.
  graph.values[second->outputs[0]].shape = graph.values[layer->outputs[0]].shape;
  graph.values[second->outputs[0]].dtype = graph.values[layer->outputs[0]].dtype;
  if (auto it = graph.bn_stats.find(layer->id); it != graph.bn_stats.end()) {
    graph.bn_stats[second->id] = it->second;
    graph.bn_stats.erase(layer->id);
  }
  return rw.Replace(*layer, {second->outputs[0]});
}

}  // namespace qopt
