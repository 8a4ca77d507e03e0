#include "passes/pass_util.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>

#include "ir/rewriter.h"
#include "status.h"

namespace qopt {

int SoleConsumer(const Graph& g, int vid) {
  int found = -1;
  for (int c : g.values[vid].consumers) {
    if (g.nodes[c].removed) continue;
    if (found >= 0 && found != c) return -1;
    found = c;
  }
  if (g.IsReturned(vid)) return -1;
  return found;
}

int ConvGroupsSlot(const Node& n) { return n.op == "aten::_convolution" ? 8 : 6; }

std::optional<int64_t> ConvGroups(const Graph& g, const Node& n) {
  if (n.kind == OpKind::kLinear) return 1;
  const size_t slot = ConvGroupsSlot(n);
  if (n.inputs.size() <= slot) return std::nullopt;
  const auto& c = g.values[n.inputs[slot]].constant;
  if (!c || !c->isInt()) return std::nullopt;
  return c->toInt();
}

bool IsDepthwiseConv(const Graph& g, const Node& n) {
  if (n.kind != OpKind::kConv || n.Param("weight") < 0) return false;
  const auto groups = ConvGroups(g, n);
  const at::Tensor& w = g.values[n.Param("weight")].constant->toTensor();
  return groups && *groups > 1 && w.size(1) == 1 && *groups == w.size(0);
}

std::optional<std::vector<int64_t>> ConvIntPair(const Graph& g, const Node& n, size_t slot) {
  if (slot >= n.inputs.size()) return std::nullopt;
  const auto& c = g.values[n.inputs[slot]].constant;
  if (!c || !c->isIntList()) return std::nullopt;
  std::vector<int64_t> v = c->toIntVector();
  if (v.size() == 1) v.push_back(v[0]);
  if (v.size() != 2) return std::nullopt;
  return v;
}

namespace {

// A bound given as a constant input: a number, a tensor, or None (open).
std::optional<at::Tensor> Bound(const Graph& g, const Node& n, size_t slot, double open) {
  if (slot >= n.inputs.size()) return std::nullopt;
  const auto& c = g.values[n.inputs[slot]].constant;
  if (!c) return std::nullopt;
  if (c->isNone()) return at::full({1}, open, at::kDouble);
  if (c->isDouble() || c->isInt()) return at::full({1}, c->toDouble(), at::kDouble);
  if (c->isTensor()) return c->toTensor().to(at::kDouble).flatten().cpu();
  return std::nullopt;
}

// A bound shared by every channel: a number, None (open) or a one-element float tensor.
std::optional<double> SharedBound(const Graph& g, const Node& n, size_t slot, double open) {
  if (slot >= n.inputs.size()) return std::nullopt;
  const auto& c = g.values[n.inputs[slot]].constant;
  if (!c) return std::nullopt;
  if (c->isNone()) return open;
  if (c->isDouble() || c->isInt()) return c->toDouble();
  if (c->isTensor() && c->toTensor().numel() == 1 && c->toTensor().scalar_type() == at::kFloat) {
    return c->toTensor().item<double>();
  }
  return std::nullopt;
}

}  // namespace

bool ClipRange::Rectifies() const { return lo.numel() > 0 && (lo == 0).all().item<bool>(); }

std::optional<ClipRange> ClipBounds(const Graph& g, const Node& n) {
  if (n.kind != OpKind::kClip) return std::nullopt;
  if (n.op == "aten::relu6" || n.op == "aten::relu6_") {
    return ClipRange{at::zeros({1}, at::kDouble), at::full({1}, 6.0, at::kDouble)};
  }
  constexpr double kInf = std::numeric_limits<double>::infinity();
  auto lo = Bound(g, n, 1, -kInf), hi = Bound(g, n, 2, kInf);
  if (!lo || !hi) return std::nullopt;
  return ClipRange{*lo, *hi};
}

std::optional<std::pair<double, double>> SharedClipBounds(const Graph& g, const Node& n) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (n.kind == OpKind::kRelu) return std::make_pair(0.0, kInf);
  if (n.kind != OpKind::kClip) return std::nullopt;
  if (n.op == "aten::relu6" || n.op == "aten::relu6_") return std::make_pair(0.0, 6.0);
  const std::optional<double> lo = SharedBound(g, n, 1, -kInf), hi = SharedBound(g, n, 2, kInf);
  if (!lo || !hi) return std::nullopt;
  return std::make_pair(*lo, *hi);
}

absl::StatusOr<int> SetClipCeiling(Graph& g, Node& n, const at::Tensor& hi, int64_t rank) {
  std::vector<int64_t> shape(std::max<int64_t>(rank - 1, 1), 1);
  shape[0] = hi.numel();
  const at::Tensor ceiling = hi.to(at::kFloat).reshape(shape);
  if (n.op == "aten::clamp" && n.Param("clip_max") >= 0) {
    g.SetParam(n, "clip_max", 2, ceiling);
    return n.id;
  }
  Rewriter rw(g);
  rw.SetInsertionPointBefore(n);
  const int lo = rw.Parameter(at::zeros({}, at::kFloat));
  const int top = rw.Parameter(ceiling);
  const std::string name = n.name;
  ASSIGN_OR_RETURN(Node* clamp, rw.Create("aten::clamp", {n.inputs[0], lo, top}, name));
  RETURN_IF_ERROR(rw.Replace(n, {clamp->outputs[0]}));
  clamp->name = name;
  g.values[clamp->outputs[0]].name = name;
  rw.Own(*clamp, "clip_min", 1);
  rw.Own(*clamp, "clip_max", 2);
  return clamp->id;
}

}  // namespace qopt
