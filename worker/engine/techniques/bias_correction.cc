#include "techniques/bias_correction.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "ir/interpreter.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {
namespace internal_bias_correction {

// Per-output-channel sums of layer outputs, over batch and spatial positions.
struct ChannelSum {
  at::Tensor sum;  // float64, [channels]
  int64_t count = 0;

  void Add(const at::Tensor& y, int64_t channel_dim) {
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < y.dim(); ++d) {
      if (d != channel_dim) dims.push_back(d);
    }
    const at::Tensor s = at::sum(y, dims, /*keepdim=*/false, at::kDouble);
    sum = sum.defined() ? sum + s : s;
    count += y.numel() / y.size(channel_dim);
  }
  at::Tensor Mean() const { return sum / static_cast<double>(count); }
};

// The channel axis of a layer's output: 1 for convolutions (N, C, ...), the last for
// linear layers (..., C).
int64_t ChannelDim(const Node& layer, const at::Tensor& y) {
  return layer.kind == OpKind::kLinear ? y.dim() - 1 : 1;
}

// Records per-channel sums of the outputs of the watched layers, then lets `inner` (the
// sim, or nothing for the floating-point model) see and replace each value. The sums are
// of the raw layer output, before an output quantizer acts on it: that is what the bias
// moves.
class OutputMeanObserver : public ValueObserver {
 public:
  OutputMeanObserver(const Graph& graph, ValueObserver* inner) : graph_(graph), inner_(inner) {}

  void Watch(int node_id) { watched_[graph_.nodes[node_id].outputs[0]] = node_id; }
  void Clear() {
    watched_.clear();
    sums_.clear();
  }
  const std::map<int, ChannelSum>& sums() const { return sums_; }  // by node id

  void OnParam(const Value& param, at::Tensor& tensor) override {
    if (inner_) inner_->OnParam(param, tensor);
  }
  void OnValue(const Value& value, c10::IValue& v) override {
    if (auto it = watched_.find(value.id); it != watched_.end() && v.isTensor()) {
      const at::Tensor& y = v.toTensor();
      sums_[it->second].Add(y, ChannelDim(graph_.nodes[it->second], y));
    }
    if (inner_) inner_->OnValue(value, v);
  }
  // The sums are taken as each value appears; no tensor is kept.
  bool RetainsValues() const override { return inner_ ? inner_->RetainsValues() : false; }
  bool Bypasses(const Node& node) const override { return inner_ && inner_->Bypasses(node); }

 private:
  const Graph& graph_;
  ValueObserver* inner_;
  std::map<int, int> watched_;  // output value id -> node id
  std::map<int, ChannelSum> sums_;
};

// E[x] per input channel of `layer`, when its input comes from a layer with batch-norm
// statistics through ReLU, clips with a lower bound of zero, and dropout only.
std::optional<at::Tensor> InputMean(const Graph& g, const Node& layer) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double lo = -kInf;
  std::optional<at::Tensor> hi;  // per-channel upper bound, float64
  int vid = layer.inputs.empty() ? -1 : layer.inputs[0];
  for (int depth = 0; vid >= 0 && depth < 8; ++depth) {
    const int producer = g.values[vid].producer;
    if (producer < 0) return std::nullopt;
    const Node& p = g.nodes[producer];
    if (p.kind == OpKind::kConv || p.kind == OpKind::kLinear) {
      auto stats = g.bn_stats.find(p.id);
      if (stats == g.bn_stats.end()) return std::nullopt;
      const at::Tensor mean = stats->second.mean.to(at::kDouble).flatten();
      const at::Tensor std = stats->second.std.to(at::kDouble).flatten();
      const at::Tensor upper = hi ? hi->to(mean.device()) : at::full_like(mean, kInf);
      if (upper.numel() != mean.numel() && upper.numel() != 1) return std::nullopt;
      return ClampedNormalMean(mean, std, lo, upper.expand_as(mean));
    }
    switch (p.kind) {
      case OpKind::kRelu:
        lo = 0.0;
        break;
      case OpKind::kClip: {
        const auto clip = ClipBounds(g, p);
        if (!clip || !clip->Rectifies()) return std::nullopt;
        lo = 0.0;
        hi = hi ? at::minimum(*hi, clip->hi) : clip->hi;
        break;
      }
      case OpKind::kDropout:
        break;
      default:
        return std::nullopt;
    }
    vid = p.inputs.empty() ? -1 : p.inputs[0];
  }
  return std::nullopt;
}

// -sum_{in, k} (W_q - W)[out, in, k] E[x_in], with a grouped convolution's output channel
// reading only its group's inputs. nullopt when E[x] does not match the weight's inputs.
std::optional<at::Tensor> AnalyticalShift(const Graph& g, const Node& layer, const at::Tensor& w,
                                          const at::Tensor& w_q, const at::Tensor& input_mean) {
  const auto groups = ConvGroups(g, layer);
  if (!groups || *groups < 1) return std::nullopt;
  const int64_t out = w.size(0), in_per_group = w.size(1);
  if (out % *groups != 0 || input_mean.numel() != *groups * in_per_group) return std::nullopt;
  const at::Tensor dw =
      (w_q.to(at::kDouble) - w.to(at::kDouble)).reshape({out, in_per_group, -1}).sum(2);
  const at::Tensor ex = input_mean.to(dw.device())
                            .reshape({*groups, in_per_group})
                            .repeat_interleave(out / *groups, 0);
  return -(dw * ex).sum(1);
}

// bias += shift. An existing bias keeps its value id so the sim's quantizer (keyed by it)
// still applies; its encodings follow the new bias unless frozen.
absl::Status AddToBias(Graph& graph, QuantSim& sim, Node& layer, const at::Tensor& shift) {
  const at::Tensor w = graph.values[layer.Param("weight")].constant->toTensor();
  const int bias_id = layer.Param("bias");
  if (bias_id < 0) {
    const at::Tensor created = shift.to(w.device(), w.scalar_type());
    const int id = graph.SetParam(layer, "bias", 2, created);
    // The floating-point model had no bias here.
    sim.SetFloatReference(id, at::zeros_like(created));
    return absl::OkStatus();
  }
  Value& bias = graph.values[bias_id];
  const at::Tensor old = bias.constant->toTensor();
  sim.SetFloatReference(bias_id, old);
  const at::Tensor updated = (old.to(at::kDouble) + shift.to(old.device())).to(old.scalar_type());
  bias.constant = c10::IValue(updated);
  auto q = sim.param_quantizers().find(bias_id);
  if (q == sim.param_quantizers().end()) return absl::OkStatus();
  std::vector<Encoding> encodings = q->second.encodings();
  if (!q->second.frozen()) {
    auto computed = ComputeTensorEncodings(updated, q->second.axis(), q->second.method(),
                                           sim.options().percentile, q->second.spec());
    if (!computed.ok()) return Annotate(computed.status(), bias.name);
    encodings = std::move(*computed);
  }
  return sim.SetParamEncodings(bias_id, std::move(encodings), q->second.frozen());
}

// Runs every batch through `interpreter` with `observer`.
absl::Status RunBatches(const Interpreter& interpreter, const std::vector<at::Tensor>& batches,
                        ValueObserver& observer) {
  for (const at::Tensor& b : batches) {
    RETURN_IF_ERROR(interpreter.Run({c10::IValue(b)}, &observer).status());
  }
  return absl::OkStatus();
}

}  // namespace internal_bias_correction

at::Tensor ClampedNormalMean(const at::Tensor& mean, const at::Tensor& std, double lo,
                             const at::Tensor& hi) {
  const at::Tensor mu = mean.to(at::kDouble);
  const at::Tensor s = std.to(at::kDouble).abs();
  const at::Tensor h = hi.to(at::kDouble).to(mu.device()).expand_as(mu);
  const double inv_sqrt2 = 1.0 / std::sqrt(2.0);
  const double inv_sqrt_2pi = 1.0 / std::sqrt(2.0 * std::acos(-1.0));
  auto cdf = [&](const at::Tensor& z) { return 0.5 * at::erfc(-z * inv_sqrt2); };
  auto pdf = [&](const at::Tensor& z) { return at::exp(-0.5 * z * z) * inv_sqrt_2pi; };
  // E[clamp(X, a, b)] = a Phi(alpha) + b (1 - Phi(beta)) + mu (Phi(beta) - Phi(alpha))
  //                     + s (phi(alpha) - phi(beta)),  alpha = (a - mu) / s, beta = (b - mu) / s.
  // An infinite bound contributes no mass beyond it, so its terms are dropped rather than
  // evaluated as inf * 0.
  const at::Tensor safe_s = at::where(s > 0, s, at::ones_like(s));
  at::Tensor cdf_a = at::zeros_like(mu), pdf_a = at::zeros_like(mu), term_a = at::zeros_like(mu);
  if (std::isfinite(lo)) {
    const at::Tensor alpha = (lo - mu) / safe_s;
    cdf_a = cdf(alpha);
    pdf_a = pdf(alpha);
    term_a = lo * cdf_a;
  }
  const at::Tensor finite_h = at::isfinite(h);
  const at::Tensor beta = (at::where(finite_h, h, mu) - mu) / safe_s;
  const at::Tensor cdf_b = at::where(finite_h, cdf(beta), at::ones_like(mu));
  const at::Tensor pdf_b = at::where(finite_h, pdf(beta), at::zeros_like(mu));
  const at::Tensor term_b = at::where(finite_h, h * (1.0 - cdf_b), at::zeros_like(mu));
  const at::Tensor e = term_a + term_b + mu * (cdf_b - cdf_a) + s * (pdf_a - pdf_b);
  // No spread: the clamp of the mean. An empty interval (b < a) clamps everything to b,
  // as at::clamp does.
  const at::Tensor point = at::minimum(at::clamp_min(mu, lo), h);
  return at::where((s > 0) & (h >= lo), e, point);
}

absl::StatusOr<std::vector<BiasCorrectionResult>> CorrectBias(
    Graph& graph, QuantSim& sim, const std::vector<at::Tensor>& batches,
    const BiasCorrectionOptions& options) {
  using namespace internal_bias_correction;
  if (&sim.graph() != &graph) {
    return absl::InvalidArgumentError("bias correction: the sim was built over another graph");
  }
  ASSIGN_OR_RETURN(const std::set<std::string> skip, graph.LayerNames(options.skip_layers, "skip_layers"));
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (q.enabled() && !q.has_encodings()) {
      return absl::FailedPreconditionError(absl::StrCat("bias correction: quantizer at ",
                                                        sim.activation_sites().at(vid).layer,
                                                        " has no encodings: calibrate first"));
    }
  }
  at::NoGradGuard no_grad;

  // The plan: each layer to correct and, where its input statistics are known, its
  // analytical shift (weights do not change during the pass, so it is fixed up front).
  struct Step {
    int node = -1;
    at::Tensor analytical_shift;  // undefined: empirical
  };
  std::vector<Step> plan;
  for (const Node* n : sim.QuantizedWeightLayers()) {
    if (skip.count(n->name)) continue;
    const int w_id = n->Param("weight");
    Step step{n->id, at::Tensor()};
    if (options.mode == BiasCorrectionOptions::Mode::kAnalytical) {
      if (auto input_mean = InputMean(graph, *n)) {
        const at::Tensor w = graph.values[w_id].constant->toTensor();
        const at::Tensor w_q = sim.param_quantizers().at(w_id).Apply(w);
        if (auto shift = AnalyticalShift(graph, *n, w, w_q, *input_mean)) {
          step.analytical_shift = *shift;
        }
      }
    }
    plan.push_back(std::move(step));
  }
  const bool needs_data = std::any_of(plan.begin(), plan.end(),
                                      [](const Step& s) { return !s.analytical_shift.defined(); });
  if (needs_data && batches.empty()) {
    return absl::InvalidArgumentError(
        "bias correction: no calibration batches, and empirical correction needs some");
  }

  const Interpreter interpreter(graph);
  // Targets: every empirically corrected layer's mean output in the floating-point model,
  // all from one pass before any bias changes.
  std::map<int, at::Tensor> float_means;
  if (needs_data) {
    OutputMeanObserver float_observer(graph, nullptr);
    for (const Step& s : plan) {
      if (!s.analytical_shift.defined()) float_observer.Watch(s.node);
    }
    // Through the sim's float model: parameters other techniques rewrote (AdaRound's
    // rounded weights) are seen at their original values.
    for (const at::Tensor& b : batches) {
      RETURN_IF_ERROR(Annotate(sim.RunFloat({c10::IValue(b)}, &float_observer).status(),
                               "bias correction (floating-point pass)"));
    }
    for (const auto& [node, sum] : float_observer.sums()) float_means[node] = sum.Mean();
  }

  std::vector<BiasCorrectionResult> results;
  const int total = static_cast<int>(plan.size());
  OutputMeanObserver sim_observer(graph, &sim);
  for (const Step& s : plan) {
    Node& layer = graph.nodes[s.node];
    at::Tensor shift = s.analytical_shift;
    BiasCorrectionResult result{layer.name, shift.defined() ? "analytical" : "empirical", 0.0};
    if (!shift.defined()) {
      sim_observer.Clear();
      sim_observer.Watch(s.node);
      RETURN_IF_ERROR(Annotate(RunBatches(interpreter, batches, sim_observer), layer.name));
      auto it = sim_observer.sums().find(s.node);
      if (it == sim_observer.sums().end() || !float_means.count(s.node)) {
        return absl::InternalError(absl::StrCat(layer.name, ": output never computed"));
      }
      shift = float_means.at(s.node) - it->second.Mean();
    }
    RETURN_IF_ERROR(Annotate(AddToBias(graph, sim, layer, shift), layer.name));
    result.mean_abs_shift = shift.abs().mean().item<double>();
    results.push_back(std::move(result));
    if (options.on_layer) {
      RETURN_IF_ERROR(options.on_layer(static_cast<int>(results.size()), total, layer.name));
    }
  }
  return results;
}

}  // namespace qopt
