#include "analysis/quant_analyzer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/interpreter.h"
#include "status.h"

namespace qopt {
namespace {

// Ops that an output quantizer may follow in a layer's supergroup (conv -> relu).
bool FollowsInGroup(OpKind kind) { return kind == OpKind::kRelu || kind == OpKind::kClip; }

// The node whose group the activation quantizer of value `vid` joins: walking back from
// its producer over ReLUs / clips that alone read an unquantized output, the first node
// with parameter quantizers; the producer itself when there is none.
int OwnerOf(const QuantSim& sim, int vid, const std::set<int>& has_params) {
  const Graph& g = sim.graph();
  const int producer = g.values[vid].producer;
  int node = producer;
  for (int hops = 0; hops < 4 && node >= 0; ++hops) {
    if (has_params.count(node)) return node;
    const Node& n = g.nodes[node];
    if (!FollowsInGroup(n.kind) || n.inputs.empty()) break;
    const int in = n.inputs[0];
    const Value& v = g.values[in];
    int readers = 0;
    for (int c : v.consumers) readers += g.nodes[c].removed ? 0 : 1;
    if (readers != 1 || g.IsReturned(in) || sim.activation_quantizers().count(in)) break;
    node = v.producer;
  }
  return producer;
}

// Which quantizers are on: each keeps the state it had when the analysis began unless
// switched off, and is put back when the analysis ends.
class Switches {
 public:
  explicit Switches(QuantSim& sim) : sim_(sim) {
    for (const auto& [vid, q] : sim.param_quantizers()) initial_[vid] = q.enabled();
    for (const auto& [vid, q] : sim.activation_quantizers()) initial_[vid] = q.enabled();
    current_ = initial_;
  }
  ~Switches() { Set([](int) { return true; }).IgnoreError(); }

  /// Turns on the quantizers `on` accepts (of those that were on), the others off.
  absl::Status Set(const std::function<bool(int vid)>& on) {
    for (auto& [vid, enabled] : current_) {
      const bool want = initial_.at(vid) && on(vid);
      if (want == enabled) continue;
      QuantizerChange change;
      change.enabled = want;
      RETURN_IF_ERROR(sim_.ChangeQuantizer(vid, change));
      enabled = want;
    }
    return absl::OkStatus();
  }

 private:
  QuantSim& sim_;
  std::map<int, bool> initial_, current_;
};

// Keeps the floating-point values of `ids` from one run, and their ranges and histograms
// over all runs.
class FloatTap : public ValueObserver {
 public:
  FloatTap(std::map<int, LayerAnalysis*> layers, int bins) : layers_(std::move(layers)), bins_(bins) {}

  void OnValue(const Value& value, c10::IValue& v) override {
    auto it = layers_.find(value.id);
    if (it == layers_.end() || !v.isTensor() || !v.toTensor().is_floating_point()) return;
    const at::Tensor x = v.toTensor().detach();
    seen_[value.id] = x;
    LayerAnalysis& l = *it->second;
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    const bool first = std::isnan(l.activation_min);
    l.activation_min = first ? lo : std::min(l.activation_min, lo);
    l.activation_max = first ? hi : std::max(l.activation_max, hi);
    ValueHistogram& h = l.activations;
    if (h.counts.empty()) {  // the grid's range, widened to what the first run saw
      h.lo = std::isnan(l.encoding_min) ? lo : std::min(lo, l.encoding_min);
      h.hi = std::isnan(l.encoding_max) ? hi : std::max(hi, l.encoding_max);
      if (h.hi <= h.lo) h.hi = h.lo + 1e-6;
      h.counts.assign(bins_, 0);
    }
    const at::Tensor xf = x.to(at::kFloat);
    const at::Tensor counts = at::histc(xf, bins_, h.lo, h.hi).to(at::kCPU).to(at::kLong);
    const int64_t* c = counts.data_ptr<int64_t>();
    for (int b = 0; b < bins_; ++b) h.counts[b] += c[b];
    h.below += xf.lt(h.lo).sum().item<int64_t>();
    h.above += xf.gt(h.hi).sum().item<int64_t>();
  }

  /// This run's values; cleared by the next run.
  std::map<int, at::Tensor>& seen() { return seen_; }

 private:
  std::map<int, LayerAnalysis*> layers_;
  int bins_;
  std::map<int, at::Tensor> seen_;
};

// Sums the squared error of the simulation's values against the floating-point ones.
class ErrorTap : public ValueObserver {
 public:
  struct Sums {
    double noise = 0.0, signal = 0.0;
    int64_t elements = 0;
  };
  explicit ErrorTap(std::map<int, at::Tensor>& reference) : reference_(reference) {}

  void OnValue(const Value& value, c10::IValue& v) override {
    auto it = reference_.find(value.id);
    if (it == reference_.end() || !v.isTensor()) return;
    const at::Tensor r = it->second.to(at::kDouble), q = v.toTensor().detach().to(at::kDouble);
    if (r.sizes() != q.sizes()) return;
    Sums& s = sums_[value.id];
    s.noise += (r - q).pow(2).sum().item<double>();
    s.signal += r.pow(2).sum().item<double>();
    s.elements += r.numel();
  }
  bool RetainsValues() const override { return false; }
  const std::map<int, Sums>& sums() const { return sums_; }

 private:
  std::map<int, at::Tensor>& reference_;
  std::map<int, Sums> sums_;
};

double SqnrDb(double signal, double noise) {
  if (noise <= 0.0) return kMaxSqnrDb;
  return std::min(kMaxSqnrDb, 10.0 * std::log10(std::max(signal, 1e-300) / noise));
}

void WeightFigures(const at::Tensor& weight, int bins, LayerAnalysis& l) {
  const at::Tensor w = weight.detach().to(at::kCPU).to(at::kFloat);
  WeightRangePerChannel(w, &l.weight_min, &l.weight_max);
  ValueHistogram& h = l.weights;
  h.lo = w.min().item<double>();
  h.hi = w.max().item<double>();
  if (h.hi <= h.lo) h.hi = h.lo + 1e-6;
  const at::Tensor counts = at::histc(w, bins, h.lo, h.hi).to(at::kLong);
  h.counts.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + bins);
}

}  // namespace

void WeightRangePerChannel(const at::Tensor& weight, std::vector<double>* min, std::vector<double>* max) {
  const at::Tensor w = weight.detach().to(at::kCPU).to(at::kDouble);
  const at::Tensor rows = w.dim() > 1 ? w.reshape({w.size(0), -1}) : w.reshape({1, -1});
  const at::Tensor lo = std::get<0>(rows.min(1)).contiguous(), hi = std::get<0>(rows.max(1)).contiguous();
  min->assign(lo.data_ptr<double>(), lo.data_ptr<double>() + lo.numel());
  max->assign(hi.data_ptr<double>(), hi.data_ptr<double>() + hi.numel());
}

std::vector<QuantizerGroup> QuantizerGroups(const QuantSim& sim) {
  const Graph& g = sim.graph();
  std::map<int, QuantizerGroup> by_node;  // node id -> group
  for (const auto& [vid, q] : sim.param_quantizers()) {
    for (int c : g.values[vid].consumers) {
      if (g.nodes[c].removed) continue;
      by_node[c].params.push_back(vid);
      break;
    }
  }
  std::set<int> has_params;  // the layers whose parameters are quantized
  for (const auto& [node, group] : by_node) has_params.insert(node);
  QuantizerGroup inputs{"input", "Input", {}, {}, -1};
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (g.values[vid].producer < 0) {
      inputs.activations.push_back(vid);
      continue;
    }
    by_node[OwnerOf(sim, vid, has_params)].activations.push_back(vid);
  }
  std::vector<QuantizerGroup> groups;
  if (!inputs.activations.empty()) {
    inputs.output = inputs.activations.front();
    groups.push_back(std::move(inputs));
  }
  for (const Node* n : g.LiveNodes()) {
    auto it = by_node.find(n->id);
    if (it == by_node.end()) continue;
    QuantizerGroup& group = it->second;
    group.layer = n->name;
    group.op_type = OpTypeName(n->kind, n->op);
    // The value after the group's last quantizer: its activation, else the layer's output.
    group.output = !group.activations.empty() ? group.activations.back() : (n->outputs.empty() ? -1 : n->outputs[0]);
    groups.push_back(std::move(group));
  }
  return groups;
}

absl::StatusOr<QuantAnalysis> AnalyzeQuantization(QuantSim& sim, const std::vector<Batch>& batches,
                                                  const AnalysisOptions& options,
                                                  const AnalysisCallbacks& callbacks) {
  if (batches.empty()) return absl::InvalidArgumentError("analyze: no evaluation batches");
  if (options.histogram_bins < 2 || options.histogram_bins > 1024) {
    return absl::InvalidArgumentError("analyze: histogram_bins must be in 2..1024");
  }
  if (options.activation_samples < 1) return absl::InvalidArgumentError("analyze: activation_samples must be >= 1");
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (q.enabled() && !q.has_encodings()) {
      return absl::FailedPreconditionError("analyze needs a calibrated simulation: calibrate first");
    }
  }
  auto progress = [&](double fraction, const std::string& message) {
    return callbacks.progress ? callbacks.progress(fraction, message) : absl::OkStatus();
  };

  QuantAnalysis result;
  // The floating-point model once: its top-1, or its outputs for the SQNR score.
  ASSIGN_OR_RETURN(SimScorer scorer, SimScorer::Create(sim, batches, options.num_batches, options.metric));
  result.score = scorer.name();
  result.fp32 = scorer.fp32();
  result.eval_samples = scorer.samples();

  // The groups, then the budget of evaluations for progress.
  std::vector<QuantizerGroup> groups = QuantizerGroups(sim);
  const int total_evaluations = 3 + (options.per_layer ? 2 * static_cast<int>(groups.size()) : 0);
  auto score = [&](const std::string& what) -> absl::StatusOr<double> {
    RETURN_IF_ERROR(progress(static_cast<double>(scorer.evaluations()) / total_evaluations,
                             absl::StrCat("evaluation ", scorer.evaluations() + 1, "/", total_evaluations, ": ", what)));
    return scorer.Score();
  };

  Switches switches(sim);
  std::set<int> params;
  for (const auto& [vid, q] : sim.param_quantizers()) params.insert(vid);
  RETURN_IF_ERROR(switches.Set([](int) { return true; }));
  ASSIGN_OR_RETURN(result.quantized, score("weights and activations quantized"));
  RETURN_IF_ERROR(switches.Set([&](int vid) { return params.count(vid) > 0; }));
  ASSIGN_OR_RETURN(result.weights_only, score("weights only"));
  RETURN_IF_ERROR(switches.Set([&](int vid) { return params.count(vid) == 0; }));
  ASSIGN_OR_RETURN(result.activations_only, score("activations only"));
  RETURN_IF_ERROR(switches.Set([](int) { return true; }));

  // Ranges, histograms and output errors, on the first activation_samples samples in
  // slices of at most 16 (every group's output of a slice is held at once).
  result.layers.resize(groups.size());
  std::map<int, LayerAnalysis*> by_output;
  for (size_t i = 0; i < groups.size(); ++i) {
    LayerAnalysis& l = result.layers[i];
    l.group = groups[i];
    const Graph& g = sim.graph();
    const Node* layer = g.FindNode(l.group.layer);
    for (int vid : l.group.params) {
      if (layer != nullptr && layer->Param("weight") == vid) {
        WeightFigures(g.values[vid].constant->toTensor(), options.histogram_bins, l);
      }
    }
    if (!l.group.activations.empty()) {
      const Quantizer& q = sim.activation_quantizers().at(l.group.activations.back());
      if (q.has_encodings()) {
        l.encoding_min = q.encodings().front().min;
        l.encoding_max = q.encodings().front().max;
      }
    }
    if (l.group.output >= 0) by_output[l.group.output] = &l;
  }
  {
    FloatTap float_tap(by_output, options.histogram_bins);
    ErrorTap error_tap(float_tap.seen());
    int64_t taken = 0;
    for (size_t b = 0; b < batches.size() && taken < options.activation_samples; ++b) {
      const at::Tensor& inputs = batches[b].inputs;
      for (int64_t at = 0; at < inputs.size(0) && taken < options.activation_samples; at += 16) {
        const int64_t len = std::min({int64_t{16}, inputs.size(0) - at, options.activation_samples - taken});
        const at::Tensor slice = inputs.slice(0, at, at + len);
        RETURN_IF_ERROR(sim.RunFloat({c10::IValue(slice)}, &float_tap).status());
        RETURN_IF_ERROR(sim.Run({c10::IValue(slice)}, &error_tap).status());
        float_tap.seen().clear();
        taken += len;
      }
    }
    result.activation_samples = taken;
    for (const auto& [vid, sums] : error_tap.sums()) {
      LayerAnalysis& l = *by_output.at(vid);
      l.output_mse = sums.elements > 0 ? sums.noise / static_cast<double>(sums.elements) : kNotMeasured;
      l.output_sqnr_db = SqnrDb(sums.signal, sums.noise);
    }
  }

  // Per group: only it quantized, then only it in floating point.
  for (LayerAnalysis& l : result.layers) {
    if (options.per_layer) {
      std::set<int> mine(l.group.params.begin(), l.group.params.end());
      mine.insert(l.group.activations.begin(), l.group.activations.end());
      RETURN_IF_ERROR(switches.Set([&](int vid) { return mine.count(vid) > 0; }));
      ASSIGN_OR_RETURN(l.only_enabled, score(absl::StrCat("only ", l.group.layer, " quantized")));
      RETURN_IF_ERROR(switches.Set([&](int vid) { return mine.count(vid) == 0; }));
      ASSIGN_OR_RETURN(l.only_disabled, score(absl::StrCat("only ", l.group.layer, " in floating point")));
    }
    if (callbacks.on_layer) RETURN_IF_ERROR(callbacks.on_layer(l));
  }
  RETURN_IF_ERROR(switches.Set([](int) { return true; }));
  result.evaluations = scorer.evaluations();
  result.eval_seconds = scorer.seconds();
  result.seconds_per_evaluation = result.evaluations > 0 ? result.eval_seconds / result.evaluations : 0.0;
  RETURN_IF_ERROR(progress(1.0, "analysis done"));
  return result;
}

}  // namespace qopt
