#include "passes/cross_layer_equalization.h"

#include <algorithm>
#include <optional>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {
namespace internal_cle {

at::Tensor Weight(const Graph& g, const Node& n) {
  return g.values[n.Param("weight")].constant->toTensor();
}

// The layer's bias as float64, zeros when it has none.
at::Tensor BiasOrZeros(const Graph& g, const Node& n, int64_t channels) {
  const int id = n.Param("bias");
  if (id >= 0) return g.values[id].constant->toTensor().to(at::kDouble);
  return at::zeros({channels}, at::kDouble);
}

enum class Role { kPlain, kDepthwise };

// A layer that can take part in equalization, and how.
std::optional<Role> LayerRole(const Graph& g, const Node& n) {
  if (n.removed || n.Param("weight") < 0) return std::nullopt;
  if (n.kind == OpKind::kLinear) return Role::kPlain;
  if (n.kind != OpKind::kConv) return std::nullopt;
  const auto groups = ConvGroups(g, n);
  if (!groups) return std::nullopt;
  if (*groups == 1) return Role::kPlain;
  const at::Tensor w = Weight(g, n);
  if (w.size(1) == 1 && *groups == w.size(0)) return Role::kDepthwise;
  return std::nullopt;  // grouped convolutions: channels do not map one to one
}

struct Link {
  int next = -1;                 // the next layer's node id
  std::vector<int> activations;  // ReLU / ReLU6 / dropout / pooling nodes in between
};

// Follows `layer`'s output through activations to the next layer, when every step has a
// single consumer and channels pass through unchanged.
std::optional<Link> NextLayer(const Graph& g, const Node& layer) {
  Link link;
  int vid = layer.outputs[0];
  for (;;) {
    const int c = SoleConsumer(g, vid);
    if (c < 0) return std::nullopt;
    const Node& n = g.nodes[c];
    if (n.inputs.empty() || n.inputs[0] != vid) return std::nullopt;
    // Per-channel positive scales (and, for absorption, per-channel shifts) pass through
    // rectifiers and pooling unchanged.
    const auto clip = ClipBounds(g, n);
    if (n.kind == OpKind::kRelu || (clip && clip->Rectifies()) || n.kind == OpKind::kDropout ||
        n.kind == OpKind::kMaxPool || n.kind == OpKind::kAvgPool) {
      link.activations.push_back(c);
      vid = n.outputs[0];
      continue;
    }
    if (!LayerRole(g, n)) return std::nullopt;
    link.next = c;
    return link;
  }
}

// Largest |w| per output channel (dim 0) or per input channel (dim 1), float64.
at::Tensor RangePerChannel(const at::Tensor& w, int dim) {
  at::Tensor t = w.to(at::kDouble).abs().transpose(0, dim).contiguous();
  return std::get<0>(t.reshape({t.size(0), -1}).max(1));
}

// Shape that broadcasts a per-channel vector over dim `dim` of a rank-`rank` tensor.
std::vector<int64_t> ChannelShape(int64_t channels, int64_t rank, int dim) {
  std::vector<int64_t> shape(rank, 1);
  shape[dim] = channels;
  return shape;
}

class Equalizer {
 public:
  Equalizer(Graph& g, CleReport& report) : g_(g), report_(report) {}

  // Divides layer `n`'s output channels by `s` (weights, bias, output statistics).
  void ScaleOutputs(Node& n, const at::Tensor& s) {
    const at::Tensor w = Weight(g_, n);
    const at::Tensor w64 = w.to(at::kDouble) / s.reshape(ChannelShape(s.numel(), w.dim(), 0));
    g_.SetParam(n, "weight", 1, w64.to(w.scalar_type()));
    if (const int b = n.Param("bias"); b >= 0) {
      const at::Tensor bias = g_.values[b].constant->toTensor();
      g_.SetParam(n, "bias", 2, (bias.to(at::kDouble) / s).to(bias.scalar_type()));
    }
    if (auto it = g_.bn_stats.find(n.id); it != g_.bn_stats.end()) {
      it->second.mean = it->second.mean / s;
      it->second.std = it->second.std / s;
    }
  }

  // Multiplies layer `n`'s input channels by `s`.
  void ScaleInputs(Node& n, const at::Tensor& s, Role role) {
    const at::Tensor w = Weight(g_, n);
    // A depthwise layer's input channel i is its output channel i (dim 0).
    const int dim = role == Role::kDepthwise ? 0 : 1;
    const at::Tensor w64 = w.to(at::kDouble) * s.reshape(ChannelShape(s.numel(), w.dim(), dim));
    g_.SetParam(n, "weight", 1, w64.to(w.scalar_type()));
  }

  // Clips between two layers whose channels were divided by `s` clip at hi / s. A clip
  // that becomes a new node is updated in `activations`.
  absl::Status ScaleClips(std::vector<int>& activations, const at::Tensor& s, int64_t rank) {
    for (int& a : activations) {
      const auto clip = ClipBounds(g_, g_.nodes[a]);
      if (!clip) continue;
      const std::string name = g_.nodes[a].name;
      ASSIGN_OR_RETURN(a, SetClipCeiling(g_, g_.nodes[a], clip->hi.expand({s.numel()}) / s, rank));
      Clipped(name);
    }
    return absl::OkStatus();
  }

  void Clipped(const std::string& name) {
    auto& names = report_.clipped_relu6;
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }

  // L1 -> L2: s = sqrt(r1 / r2). L2 may be depthwise (a chain ending at one).
  absl::Status Pair(Node& l1, Link& link) {
    Node& l2 = g_.nodes[link.next];
    const Role role2 = *LayerRole(g_, l2);
    const at::Tensor w1 = Weight(g_, l1);
    const at::Tensor r1 = RangePerChannel(w1, 0);
    const at::Tensor r2 = RangePerChannel(Weight(g_, l2), role2 == Role::kDepthwise ? 0 : 1);
    if (r1.numel() != r2.numel()) return absl::OkStatus();
    at::Tensor s = at::sqrt(r1 / r2);
    s = at::where((r1 > 0) & (r2 > 0) & at::isfinite(s), s, at::ones_like(s));
    ScaleOutputs(l1, s);
    ScaleInputs(l2, s, role2);
    Record(s);
    return ScaleClips(link.activations, s, w1.dim());
  }

  // The smallest and largest scale applied since the last call (1, 1 when none was).
  std::pair<double, double> TakeScaleRange() {
    const auto range = scale_range_.value_or(std::pair{1.0, 1.0});
    scale_range_.reset();
    return range;
  }

  // L1 -> depthwise L2 -> L3, jointly: every range becomes cbrt(r1 r2 r3).
  absl::Status Triple(Node& l1, Link& a, Link& b) {
    Node& l2 = g_.nodes[a.next];
    Node& l3 = g_.nodes[b.next];
    const at::Tensor w1 = Weight(g_, l1);
    const at::Tensor r1 = RangePerChannel(w1, 0);
    const at::Tensor r2 = RangePerChannel(Weight(g_, l2), 0);
    const at::Tensor r3 = RangePerChannel(Weight(g_, l3), 1);
    if (r1.numel() != r2.numel() || r2.numel() != r3.numel()) return absl::OkStatus();
    const at::Tensor c = at::pow(r1 * r2 * r3, 1.0 / 3.0);
    const at::Tensor ok = (r1 > 0) & (r2 > 0) & (r3 > 0);
    const at::Tensor s1 = at::where(ok, r1 / c, at::ones_like(c));
    const at::Tensor s2 = at::where(ok, c / r3, at::ones_like(c));
    ScaleOutputs(l1, s1);
    ScaleInputs(l2, s1, Role::kDepthwise);
    ScaleOutputs(l2, s2);
    ScaleInputs(l3, s2, Role::kPlain);
    Record(s1);
    Record(s2);
    RETURN_IF_ERROR(ScaleClips(a.activations, s1, w1.dim()));
    return ScaleClips(b.activations, s2, w1.dim());
  }

  // High-bias absorption from L1 into L2 through ReLU / clips (needs L1's statistics).
  absl::Status Absorb(Node& l1, Link& link) {
    auto stats = g_.bn_stats.find(l1.id);
    if (stats == g_.bn_stats.end() || link.activations.empty()) return absl::OkStatus();
    // Only through a rectifier: without one, a constant shift is not "high bias".
    const bool rectified = std::any_of(link.activations.begin(), link.activations.end(), [&](int a) {
      return g_.nodes[a].kind == OpKind::kRelu || ClipBounds(g_, g_.nodes[a]);
    });
    if (!rectified) return absl::OkStatus();
    Node& l2 = g_.nodes[link.next];
    const at::Tensor w1 = Weight(g_, l1);
    const int64_t channels = w1.size(0);
    at::Tensor absorb = at::clamp_min(stats->second.mean - 3.0 * stats->second.std, 0.0);
    // A clipped channel can give up at most what lies below its ceiling.
    for (int a : link.activations) {
      if (const auto clip = ClipBounds(g_, g_.nodes[a])) absorb = at::minimum(absorb, clip->hi);
    }
    if (absorb.max().item<double>() <= 0.0) return absl::OkStatus();

    const at::Tensor b1 = BiasOrZeros(g_, l1, channels);
    g_.SetParam(l1, "bias", 2, (b1 - absorb).to(w1.scalar_type()));
    stats->second.mean = stats->second.mean - absorb;
    for (int& a : link.activations) {
      const auto clip = ClipBounds(g_, g_.nodes[a]);
      if (!clip) continue;
      const std::string name = g_.nodes[a].name;
      ASSIGN_OR_RETURN(a, SetClipCeiling(g_, g_.nodes[a], clip->hi.expand({channels}) - absorb, w1.dim()));
      Clipped(name);
    }
    // L2 sees x - a instead of x: its bias adds W2 a (summed over the kernel).
    const at::Tensor w2 = Weight(g_, l2).to(at::kDouble);
    const int64_t out2 = w2.size(0);
    at::Tensor shift;
    if (LayerRole(g_, l2) == Role::kDepthwise) {
      shift = w2.reshape({out2, -1}).sum(1) * absorb;
    } else {
      shift = (w2.reshape({out2, w2.size(1), -1}).sum(2) * absorb.reshape({1, -1})).sum(1);
    }
    const at::Tensor b2 = BiasOrZeros(g_, l2, out2);
    g_.SetParam(l2, "bias", 2, (b2 + shift).to(w1.scalar_type()));
    if (auto s2 = g_.bn_stats.find(l2.id); s2 != g_.bn_stats.end()) s2->second.mean = s2->second.mean + shift;
    report_.absorbed.emplace_back(l1.name, l2.name);
    return absl::OkStatus();
  }

 private:
  void Record(const at::Tensor& s) {
    const double lo = s.min().item<double>(), hi = s.max().item<double>();
    if (!scale_range_) {
      scale_range_ = std::pair{lo, hi};
    } else {
      scale_range_->first = std::min(scale_range_->first, lo);
      scale_range_->second = std::max(scale_range_->second, hi);
    }
  }

  Graph& g_;
  CleReport& report_;
  std::optional<std::pair<double, double>> scale_range_;
};

}  // namespace internal_cle

absl::StatusOr<CleReport> CrossLayerEqualize(Graph& graph, const CleOptions& options) {
  using namespace internal_cle;
  CleReport report;
  Equalizer eq(graph, report);
  // Chains, each starting at a layer no other chain leads into.
  std::set<int> has_predecessor;
  for (const Node& n : graph.nodes) {
    if (!LayerRole(graph, n)) continue;
    if (auto link = NextLayer(graph, n)) has_predecessor.insert(link->next);
  }
  std::vector<std::pair<std::vector<int>, std::vector<Link>>> chains;
  for (const Node& n : graph.nodes) {
    if (!LayerRole(graph, n) || has_predecessor.count(n.id)) continue;
    std::vector<int> layers = {n.id};
    std::vector<Link> links;
    while (auto link = NextLayer(graph, graph.nodes[layers.back()])) {
      if (std::count(layers.begin(), layers.end(), link->next)) break;
      links.push_back(*link);
      layers.push_back(link->next);
    }
    if (layers.size() >= 2) chains.emplace_back(std::move(layers), std::move(links));
  }
  for (auto& [layers, links] : chains) {
    for (size_t j = 0; j + 1 < layers.size();) {
      Node& l1 = graph.nodes[layers[j]];
      // A depthwise L1 pairs like any layer: its output channel i is its weight's row i.
      const bool triple = j + 2 < layers.size() && LayerRole(graph, graph.nodes[layers[j + 1]]) == Role::kDepthwise &&
                          LayerRole(graph, l1) == Role::kPlain;
      if (triple) {
        RETURN_IF_ERROR(eq.Triple(l1, links[j], links[j + 1]));
        j += 2;
      } else {
        RETURN_IF_ERROR(eq.Pair(l1, links[j]));
        ++j;
      }
    }
    std::vector<std::string> names;
    for (int id : layers) names.push_back(graph.nodes[id].name);
    report.chains.push_back(std::move(names));
    report.scale_ranges.push_back(eq.TakeScaleRange());
  }
  if (options.high_bias_absorption) {
    for (auto& [layers, links] : chains) {
      for (size_t j = 0; j + 1 < layers.size(); ++j) RETURN_IF_ERROR(eq.Absorb(graph.nodes[layers[j]], links[j]));
    }
  }
  return report;
}

}  // namespace qopt
