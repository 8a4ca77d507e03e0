#include "quant/quantsim.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <set>
#include <stdexcept>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {

bool IsDataMovement(const Node& n) {
  static const std::set<std::string> kOps = {
      "aten::flatten", "aten::view", "aten::reshape", "aten::dropout",
      "aten::feature_dropout", "aten::contiguous", "aten::permute", "aten::transpose",
      "aten::t", "aten::squeeze", "aten::unsqueeze", "aten::slice", "aten::select",
      "aten::chunk", "aten::split", "aten::expand", "aten::to", "aten::detach",
      "aten::clone", "aten::size", "aten::numel", "aten::dim", "aten::Int",
      "prim::NumToTensor", "prim::ListConstruct", "prim::TupleConstruct",
      "prim::ListUnpack", "prim::TupleUnpack", "aten::max_pool2d",
      // Rearranging or repeating values keeps them on their grid.
      "aten::pixel_shuffle", "aten::pixel_unshuffle", "aten::upsample_nearest1d",
      "aten::upsample_nearest2d", "aten::upsample_nearest3d", "aten::repeat"};
  return n.kind == OpKind::kFlatten || n.kind == OpKind::kDropout || n.kind == OpKind::kIf ||
         n.kind == OpKind::kLoop || kOps.count(n.op) > 0;
}

namespace internal_quantsim {

// The axis of a layer's weight along which per-channel encodings go (its output
// channels), or -1 when the op has no per-channel weight.
int WeightChannelAxis(const Node& n) {
  switch (n.kind) {
    case OpKind::kConv:
    case OpKind::kLinear:
      return 0;
    case OpKind::kConvTranspose:  // weight (in, out / groups, k...)
      return 1;
    default:
      return -1;
  }
}

template <typename T>
std::optional<T> FirstSet(std::initializer_list<std::optional<T>> options) {
  for (const auto& o : options) {
    if (o) return o;
  }
  return std::nullopt;
}

const OpRule* Lookup(const std::map<std::string, OpRule>& rules, const std::string& key) {
  auto it = rules.find(key);
  return it == rules.end() ? nullptr : &it->second;
}

std::optional<int> ParamBitwidth(const OpRule& rule, const std::string& role) {
  auto it = rule.params.find(role);
  return it == rule.params.end() ? std::nullopt : it->second.bitwidth;
}

std::optional<bool> ParamField(const OpRule* rule, const std::string& role,
                               std::optional<bool> ParamRule::*field) {
  if (!rule) return std::nullopt;
  auto it = rule->params.find(role);
  return it == rule->params.end() ? std::nullopt : it->second.*field;
}

}  // namespace internal_quantsim

absl::Status QuantSimOptions::Validate() const {
  QuantSpec p, a;
  p.bitwidth = param_bitwidth;
  a.bitwidth = activation_bitwidth;
  RETURN_IF_ERROR(Annotate(p.Validate(), "param_bitwidth"));
  RETURN_IF_ERROR(Annotate(a.Validate(), "activation_bitwidth"));
  if (!(percentile > 50.0 && percentile <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("percentile must be in (50, 100], got ", percentile));
  }
  return absl::OkStatus();
}

QuantSim::QuantSim(const Graph& graph, QuantSimOptions options)
    : graph_(graph), options_(std::move(options)), interpreter_(graph) {}

absl::StatusOr<std::unique_ptr<QuantSim>> QuantSim::Create(const Graph& graph,
                                                          QuantSimOptions options) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<QuantSim> sim(new QuantSim(graph, std::move(options)));
  RETURN_IF_ERROR(sim->Place());
  return sim;
}

absl::Status QuantSim::Place() {
  using namespace internal_quantsim;
  const QuantSimConfig& cfg = options_.config;
  ASSIGN_OR_RETURN(const std::set<std::string> excluded, graph_.LayerNames(options_.exclude_layers, "exclude_layers"));
  for (const auto& [name, _] : cfg.layers) {
    if (!graph_.FindNode(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config layers: no layer named '", name, "' in the model"));
    }
  }

  auto spec_for = [&](int bitwidth, bool symmetric) {
    QuantSpec s;
    s.bitwidth = bitwidth;
    s.symmetric = symmetric;
    s.strict_symmetric = cfg.strict_symmetric.value_or(false);
    s.unsigned_symmetric = cfg.unsigned_symmetric.value_or(true);
    return s;
  };

  // Outputs that feed the next member of a supergroup are not quantized.
  std::set<int> grouped_outputs;
  const auto live = graph_.LiveNodes();
  for (const auto& group : cfg.supergroups) {
    for (const Node* first : live) {
      if (OpTypeName(first->kind, first->op) != group[0]) continue;
      std::vector<int> inner;
      const Node* cur = first;
      bool match = true;
      for (size_t k = 1; k < group.size() && match; ++k) {
        if (cur->outputs.size() != 1) {
          match = false;
          break;
        }
        std::vector<int> consumers;
        for (int c : graph_.values[cur->outputs[0]].consumers) {
          if (!graph_.nodes[c].removed) consumers.push_back(c);
        }
        if (consumers.size() != 1 || graph_.IsReturned(cur->outputs[0])) {
          match = false;
          break;
        }
        const Node& next = graph_.nodes[consumers[0]];
        if (OpTypeName(next.kind, next.op) != group[k]) {
          match = false;
          break;
        }
        inner.push_back(cur->outputs[0]);
        cur = &next;
      }
      if (match) grouped_outputs.insert(inner.begin(), inner.end());
    }
  }

  for (const Node* n : live) {
    if (excluded.count(n->name)) continue;
    const std::string type = OpTypeName(n->kind, n->op);
    const OpRule* layer_rule = Lookup(cfg.layers, n->name);
    const OpRule* type_rule = Lookup(cfg.op_types, type);

    for (const auto& [role, vid] : n->params) {
      // Weights and biases only: batch-norm statistics and clip bounds are not weights.
      if ((role != "weight" && role != "bias") || !graph_.values[vid].IsFloatingPoint()) continue;
      const bool quantized =
          FirstSet<bool>({ParamField(layer_rule, role, &ParamRule::is_quantized),
                          ParamField(type_rule, role, &ParamRule::is_quantized),
                          cfg.params.count(role) ? cfg.params.at(role).is_quantized
                                                 : std::nullopt,
                          cfg.default_params.is_quantized})
              .value_or(false);
      if (!quantized) continue;
      const bool symmetric =
          FirstSet<bool>({ParamField(layer_rule, role, &ParamRule::is_symmetric),
                          ParamField(type_rule, role, &ParamRule::is_symmetric),
                          cfg.params.count(role) ? cfg.params.at(role).is_symmetric
                                                 : std::nullopt,
                          cfg.default_params.is_symmetric})
              .value_or(true);
      const bool per_channel =
          role == "weight" && WeightChannelAxis(*n) >= 0 &&
          FirstSet<bool>({layer_rule ? layer_rule->per_channel_quantization : std::nullopt,
                          type_rule ? type_rule->per_channel_quantization : std::nullopt,
                          cfg.per_channel_quantization})
              .value_or(options_.per_channel);
      auto param_bitwidth = [&](const OpRule* rule) {
        return rule ? ParamBitwidth(*rule, role) : std::nullopt;
      };
      const int bitwidth =
          FirstSet<int>({param_bitwidth(layer_rule), param_bitwidth(type_rule),
                         cfg.params.count(role) ? cfg.params.at(role).bitwidth : std::nullopt,
                         cfg.default_params.bitwidth})
              .value_or(options_.param_bitwidth);
      Quantizer q(spec_for(bitwidth, symmetric), options_.param_method, options_.percentile,
                  per_channel ? WeightChannelAxis(*n) : -1);
      RETURN_IF_ERROR(
          Annotate(q.ComputeFromTensor(graph_.values[vid].constant->toTensor()),
                   graph_.values[vid].name));
      param_quantizers_.emplace(vid, std::move(q));
      RETURN_IF_ERROR(RefreshParam(vid));
    }

    const std::optional<bool> explicit_output =
        FirstSet<bool>({layer_rule ? layer_rule->is_output_quantized : std::nullopt,
                        type_rule ? type_rule->is_output_quantized : std::nullopt});
    const bool symmetric =
        FirstSet<bool>({layer_rule ? layer_rule->is_symmetric : std::nullopt,
                        type_rule ? type_rule->is_symmetric : std::nullopt,
                        cfg.default_ops.is_symmetric})
            .value_or(false);
    const int activation_bitwidth =
        FirstSet<int>({layer_rule ? layer_rule->bitwidth : std::nullopt,
                       type_rule ? type_rule->bitwidth : std::nullopt, cfg.default_ops.bitwidth})
            .value_or(options_.activation_bitwidth);
    for (size_t k = 0; k < n->outputs.size(); ++k) {
      const int vid = n->outputs[k];
      // Shape arithmetic, indices and masks are never quantized.
      if (!graph_.values[vid].IsFloatingPoint()) continue;
      const bool is_model_output =
          std::count(graph_.outputs().begin(), graph_.outputs().end(), vid) > 0;
      bool quantize = explicit_output.value_or(!IsDataMovement(*n) &&
                                               cfg.default_ops.is_output_quantized.value_or(false));
      if (grouped_outputs.count(vid) && !explicit_output) quantize = false;
      if (is_model_output && cfg.model_output_quantized) quantize = true;
      if (!quantize) continue;
      Quantizer q(spec_for(activation_bitwidth, symmetric), options_.activation_method, options_.percentile, -1);
      // A fixed range (AIMET's encoding_constraints): the encoding is set now and never
      // calibrated.
      std::optional<std::pair<double, double>> constraints;
      if (layer_rule && layer_rule->encoding_constraints) {
        constraints = layer_rule->encoding_constraints;
      } else if (type_rule) {
        constraints = type_rule->encoding_constraints;
      }
      if (constraints) {
        RETURN_IF_ERROR(q.SetEncodings({ComputeEncoding(constraints->first, constraints->second, q.spec())}, true));
      }
      act_quantizers_.emplace(vid, std::move(q));
      act_sites_[vid] = ActivationSite{n->name, false, static_cast<int>(k)};
    }

    // Inputs the config asks to quantize at this op, unless their producer already does.
    const bool quantize_inputs = FirstSet<bool>({layer_rule ? layer_rule->is_input_quantized : std::nullopt,
                                                 type_rule ? type_rule->is_input_quantized : std::nullopt,
                                                 cfg.default_ops.is_input_quantized})
                                     .value_or(false);
    for (size_t k = 0; quantize_inputs && k < n->inputs.size(); ++k) {
      const int vid = n->inputs[k];
      const Value& v = graph_.values[vid];
      if (v.constant || v.is_param || !v.IsFloatingPoint() || act_quantizers_.count(vid)) continue;
      act_quantizers_.emplace(vid, Quantizer(spec_for(activation_bitwidth, symmetric), options_.activation_method,
                                             options_.percentile, -1));
      act_sites_[vid] = ActivationSite{n->name, true, static_cast<int>(k)};
    }
  }

  if (cfg.model_input_quantized) {
    const bool symmetric = cfg.default_ops.is_symmetric.value_or(false);
    for (int vid : graph_.inputs()) {
      const Value& v = graph_.values[vid];
      if (!v.IsFloatingPoint() || v.consumers.empty()) continue;
      const Node& consumer = graph_.nodes[v.consumers[0]];
      if (excluded.count(consumer.name)) continue;
      const int index = static_cast<int>(
          std::find(consumer.inputs.begin(), consumer.inputs.end(), vid) - consumer.inputs.begin());
      act_quantizers_.emplace(vid, Quantizer(spec_for(cfg.model_input_bitwidth.value_or(options_.activation_bitwidth), symmetric),
                                             options_.activation_method, options_.percentile,
                                             -1));
      act_sites_[vid] = ActivationSite{consumer.name, true, index};
    }
  }
  return CheckSupportedKernels();
}

// Every quantized layer runs a kernel its op type's (or the defaults') supported_kernels
// lists: its output's bitwidth and its weight's, where it has them.
absl::Status QuantSim::CheckSupportedKernels() const {
  const QuantSimConfig& cfg = options_.config;
  for (const Node* n : graph_.LiveNodes()) {
    const std::string type = OpTypeName(n->kind, n->op);
    const OpRule* layer_rule = internal_quantsim::Lookup(cfg.layers, n->name);
    const OpRule* type_rule = internal_quantsim::Lookup(cfg.op_types, type);
    const std::vector<SupportedKernel>& kernels =
        layer_rule && !layer_rule->supported_kernels.empty()  ? layer_rule->supported_kernels
        : type_rule && !type_rule->supported_kernels.empty() ? type_rule->supported_kernels
                                                               : cfg.supported_kernels;
    if (kernels.empty()) continue;
    std::optional<int> activation_bits, param_bits;
    for (int vid : n->outputs) {
      if (auto it = act_quantizers_.find(vid); it != act_quantizers_.end()) activation_bits = it->second.spec().bitwidth;
    }
    if (const int w = n->Param("weight"); w >= 0) {
      if (auto it = param_quantizers_.find(w); it != param_quantizers_.end()) param_bits = it->second.spec().bitwidth;
    }
    if (!activation_bits && !param_bits) continue;
    const bool supported = std::any_of(kernels.begin(), kernels.end(),
                                       [&](const SupportedKernel& k) { return k.Runs(activation_bits, param_bits); });
    if (supported) continue;
    std::vector<std::string> names;
    for (const SupportedKernel& k : kernels) names.push_back(k.Name());
    return absl::InvalidArgumentError(absl::StrCat(
        "quantsim config: layer ", n->name, " (", type, ") is quantized to ",
        param_bits ? absl::StrCat("W", *param_bits) : "", activation_bits ? absl::StrCat("A", *activation_bits) : "",
        ", which its supported_kernels do not list (", absl::StrJoin(names, ", "),
        "); change the bitwidths or the config's supported_kernels"));
  }
  return absl::OkStatus();
}

absl::Status QuantSim::UpdateParam(int value_id) {
  auto it = param_quantizers_.find(value_id);
  if (it == param_quantizers_.end()) return absl::NotFoundError(absl::StrCat("value ", value_id, " has no quantizer"));
  RETURN_IF_ERROR(it->second.ComputeFromTensor(graph_.values[value_id].constant->toTensor()));
  return RefreshParam(value_id);
}

absl::Status QuantSim::RefreshParam(int value_id) {
  const Quantizer& q = param_quantizers_.at(value_id);
  quantized_params_[value_id] = q.Apply(graph_.values[value_id].constant->toTensor());
  integer_weights_.erase(value_id);
  return absl::OkStatus();
}

absl::Status QuantSim::ObserveBatch(const std::vector<c10::IValue>& inputs) {
  mode_ = Mode::kCalibrate;
  auto out = interpreter_.Run(inputs, this, profile_);
  mode_ = Mode::kSimulate;
  return out.status();
}

absl::Status QuantSim::FinishCalibration() {
  for (int vid : non_float_) {
    act_quantizers_.erase(vid);
    act_sites_.erase(vid);
  }
  non_float_.clear();
  for (auto& [vid, q] : act_quantizers_) {
    const int producer = graph_.values[vid].producer;
    if (!q.frozen() && !q.has_statistics() && producer >= 0 && graph_.nodes[producer].parent >= 0) {
      q.set_enabled(false);
      continue;
    }
    const ActivationSite& site = act_sites_.at(vid);
    RETURN_IF_ERROR(Annotate(q.ComputeFromStatistics(),
                             absl::StrCat(site.layer, site.is_input ? " input " : " output ",
                                          site.index)));
  }
  return absl::OkStatus();
}

namespace internal_quantsim {

// The sim first, then a tap that sees what the sim made of each parameter and value.
class Tapped : public ValueObserver {
 public:
  Tapped(ValueObserver* sim, ValueObserver* tap) : sim_(sim), tap_(tap) {}
  void OnParam(const Value& param, at::Tensor& tensor) override {
    sim_->OnParam(param, tensor);
    tap_->OnParam(param, tensor);
  }
  void OnInputs(const Node& node, std::vector<c10::IValue>& inputs) override { sim_->OnInputs(node, inputs); }
  void OnValue(const Value& value, c10::IValue& v) override {
    sim_->OnValue(value, v);
    tap_->OnValue(value, v);
  }
  bool RetainsValues() const override { return sim_->RetainsValues() || tap_->RetainsValues(); }
  bool Bypasses(const Node& node) const override { return sim_->Bypasses(node); }
  bool Finished() const override { return tap_->Finished(); }

 private:
  ValueObserver* sim_;
  ValueObserver* tap_;
};

}  // namespace internal_quantsim

std::vector<const Node*> QuantSim::QuantizedWeightLayers(bool with_transposed) const {
  std::vector<const Node*> layers;
  for (const Node* n : graph_.LiveNodes()) {
    const bool layer = n->kind == OpKind::kConv || n->kind == OpKind::kLinear ||
                       (with_transposed && n->kind == OpKind::kConvTranspose);
    if (!layer) continue;
    const int weight = n->Param("weight");
    if (weight >= 0 && param_quantizers_.count(weight)) layers.push_back(n);
  }
  return layers;
}

void QuantSim::SetFloatReference(int value_id, at::Tensor original) {
  float_refs_.emplace(value_id, std::move(original));
}

void QuantSim::SetActivationQuantization(bool enabled) {
  for (auto& [vid, q] : act_quantizers_) q.set_enabled(enabled && q.has_encodings());
}

absl::StatusOr<c10::IValue> QuantSim::RunFloat(const std::vector<c10::IValue>& inputs, ValueObserver* tap) {
  mode_ = Mode::kFloat;
  auto out = Interpret(inputs, tap);
  mode_ = Mode::kSimulate;
  return out;
}

absl::StatusOr<c10::IValue> QuantSim::Run(const std::vector<c10::IValue>& inputs, ValueObserver* tap) {
  for (const auto& [vid, q] : act_quantizers_) {
    if (q.enabled() && !q.has_encodings()) {
      const ActivationSite& site = act_sites_.at(vid);
      return absl::FailedPreconditionError(
          absl::StrCat("quantizer at ", site.layer, " has no encodings: calibrate first"));
    }
  }
  mode_ = Mode::kSimulate;
  // Planned per pass: encodings, switches and the graph's biases may have changed since.
  kernels_ = IntegerKernels();
  quantize_linear_.clear();
  for (const auto& [vid, q] : act_quantizers_) {
    if (std::optional<UInt8Grid> g = QuantizeLinearGrid(vid)) quantize_linear_.emplace(vid, *g);
  }
  return Interpret(inputs, tap);
}

absl::StatusOr<c10::IValue> QuantSim::Interpret(const std::vector<c10::IValue>& inputs, ValueObserver* tap) {
  if (tap == nullptr) return interpreter_.Run(inputs, this, profile_);
  internal_quantsim::Tapped tapped(this, tap);
  return interpreter_.Run(inputs, &tapped, profile_);
}

absl::StatusOr<at::Tensor> QuantSim::Forward(const at::Tensor& input) {
  ASSIGN_OR_RETURN(c10::IValue out, Run({c10::IValue(input)}));
  if (!out.isTensor()) return absl::InvalidArgumentError("model output is not a single tensor");
  return out.toTensor();
}

absl::StatusOr<at::Tensor> QuantSim::ForwardFloat(const at::Tensor& input) {
  ASSIGN_OR_RETURN(c10::IValue out, RunFloat({c10::IValue(input)}));
  if (!out.isTensor()) return absl::InvalidArgumentError("model output is not a single tensor");
  return out.toTensor();
}

absl::Status QuantSim::SetParamEncodings(int value_id, std::vector<Encoding> e, bool freeze) {
  auto it = param_quantizers_.find(value_id);
  if (it == param_quantizers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(graph_.values[value_id].name, " has no parameter quantizer"));
  }
  RETURN_IF_ERROR(Annotate(it->second.SetEncodings(std::move(e), freeze),
                           graph_.values[value_id].name));
  return RefreshParam(value_id);
}

absl::Status QuantSim::SetActivationEncodings(int value_id, std::vector<Encoding> e,
                                              bool freeze) {
  auto it = act_quantizers_.find(value_id);
  if (it == act_quantizers_.end()) {
    return absl::NotFoundError(
        absl::StrCat(graph_.values[value_id].name, " has no activation quantizer"));
  }
  return it->second.SetEncodings(std::move(e), freeze);
}

absl::Status QuantSim::ChangeQuantizer(int value_id, const QuantizerChange& change) {
  const bool is_param = param_quantizers_.count(value_id) > 0;
  auto it = is_param ? param_quantizers_.find(value_id) : act_quantizers_.find(value_id);
  if (it == (is_param ? param_quantizers_.end() : act_quantizers_.end())) {
    return absl::NotFoundError(absl::StrCat(graph_.values[value_id].name, " has no quantizer"));
  }
  Quantizer& q = it->second;
  const std::string& name = graph_.values[value_id].name;
  if (change.enabled) q.set_enabled(*change.enabled);
  if (!change.bitwidth && !change.symmetric && !change.per_channel) {
    // A parameter's quantized copy is cached: switching its quantizer rebuilds it.
    return is_param && change.enabled ? RefreshParam(value_id) : absl::OkStatus();
  }
  QuantSpec spec = q.spec();
  if (change.bitwidth) spec.bitwidth = *change.bitwidth;
  if (change.symmetric) spec.symmetric = *change.symmetric;
  RETURN_IF_ERROR(Annotate(spec.Validate(), name));
  int axis = q.axis();
  if (change.per_channel) {
    const auto& readers = graph_.values[value_id].consumers;
    const Node* layer = readers.empty() ? nullptr : &graph_.nodes[readers[0]];
    const bool layer_weight = is_param && layer && internal_quantsim::WeightChannelAxis(*layer) >= 0 &&
                              layer->Param("weight") == value_id;
    if (*change.per_channel && !layer_weight) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": only conv, transposed conv and linear weights have per-channel encodings"));
    }
    axis = *change.per_channel ? internal_quantsim::WeightChannelAxis(*layer) : -1;
  }
  if (is_param) {
    q.Respec(spec, axis);
    RETURN_IF_ERROR(Annotate(q.ComputeFromTensor(graph_.values[value_id].constant->toTensor()), name));
    return RefreshParam(value_id);
  }
  if (!q.has_statistics()) {
    return absl::FailedPreconditionError(
        absl::StrCat(name, ": no calibration statistics to recompute its encodings from (calibrate first)"));
  }
  q.Respec(spec, axis);
  return Annotate(q.ComputeFromStatistics(), name);
}

int QuantSim::FindActivation(const std::string& layer, bool is_input, int index) const {
  for (const auto& [vid, site] : act_sites_) {
    if (site.layer == layer && site.is_input == is_input && site.index == index) return vid;
  }
  return -1;
}

void QuantSim::OnParam(const Value& param, at::Tensor& tensor) {
  if (mode_ != Mode::kSimulate) {
    if (auto it = float_refs_.find(param.id); it != float_refs_.end()) tensor = it->second;
    return;
  }
  if (auto it = quantized_params_.find(param.id); it != quantized_params_.end()) {
    tensor = it->second;
  }
}

// quantize(relu(x)) == quantize(x) when the grid's lowest value is zero (offset 0):
// negatives clamp to zero either way, so the ReLU pass can be skipped. The same holds for
// a clip to [0, c] whose ceiling c is at or above the grid's top level (c / scale rounds
// to it): values above c land on the top level either way. With a ceiling per channel (a
// clip cross-layer equalization rescaled) the lowest one decides.
//
// Calibration skips the ReLUs and clips FusedClip takes: OnValue clamps their input in
// place as it bins it (Quantizer::ObserveClamped), so the values are read once.
bool QuantSim::Bypasses(const Node& node) const {
  if (mode_ == Mode::kCalibrate) return fused_clip_ == node.id;
  const bool relu = node.kind == OpKind::kRelu;
  if (mode_ != Mode::kSimulate || !(relu || node.kind == OpKind::kClip) || node.outputs.size() != 1) {
    return false;
  }
  auto it = act_quantizers_.find(node.outputs[0]);
  if (it == act_quantizers_.end()) return false;
  const Quantizer& q = it->second;
  if (!q.enabled() || q.axis() >= 0 || !q.has_encodings() || q.encodings()[0].offset != 0) return false;
  if (relu) return true;
  double ceiling;
  if (const auto shared = SharedClipBounds(graph_, node)) {  // no tensors built, the usual case
    if (shared->first != 0.0) return false;
    ceiling = shared->second;
  } else {
    const std::optional<ClipRange> clip = ClipBounds(graph_, node);
    if (!clip || !clip->Rectifies()) return false;
    ceiling = clip->hi.min().item<double>();
  }
  // As the fake-quantize loop computes the level, with a quarter step to spare.
  const Encoding& e = q.encodings()[0];
  const float level = static_cast<float>(ceiling) * (1.0f / static_cast<float>(e.scale));
  return level >= static_cast<float>(e.quant_max()) - 0.25f;
}

std::optional<std::pair<double, double>> QuantSim::FusedClip(const Node& node, const c10::IValue& input) const {
  if ((node.kind != OpKind::kRelu && node.kind != OpKind::kClip) || node.outputs.size() != 1 || !input.isTensor()) {
    return std::nullopt;
  }
  auto it = act_quantizers_.find(node.outputs[0]);
  if (it == act_quantizers_.end() || it->second.frozen()) return std::nullopt;
  const at::Tensor& x = input.toTensor();
  if (x.scalar_type() != at::kFloat || !x.device().is_cpu()) return std::nullopt;
  return SharedClipBounds(graph_, node);
}

void QuantSim::OnInputs(const Node& node, std::vector<c10::IValue>& inputs) {
  if (mode_ == Mode::kCalibrate) {
    const auto bounds = inputs.empty() ? std::nullopt : FusedClip(node, inputs[0]);
    fused_clip_ = bounds ? node.id : -1;
    if (bounds) fused_bounds_ = *bounds;
    return;
  }
  if (mode_ != Mode::kSimulate || kernels_.empty()) return;
  auto it = kernels_.find(node.id);
  if (it == kernels_.end()) return;
  const at::Tensor& x = inputs[0].toTensor();
  if (it->second.kind != IntegerKernel::Kind::kAdd && x.dim() != 4) {
    throw std::invalid_argument(absl::StrCat("the int8 kernel simulation takes 4-d inputs, got ", x.dim(), "-d"));
  }
  if (it->second.kind == IntegerKernel::Kind::kGlobalAveragePool) pool_sizes_[node.id] = x.size(2) * x.size(3);
  PrepareKernelInputs(it->second, inputs);
}

void QuantSim::OnValue(const Value& value, c10::IValue& v) {
  if (mode_ == Mode::kFloat) return;
  if (mode_ == Mode::kSimulate && !kernels_.empty() && value.producer >= 0) {
    if (auto k = kernels_.find(value.producer); k != kernels_.end()) {
      v = FinishKernel(k->second, v.toTensor(), pool_sizes_[value.producer]);
    }
  }
  auto it = act_quantizers_.find(value.id);
  if (it == act_quantizers_.end() || !v.isTensor()) return;
  if (mode_ == Mode::kCalibrate && value.producer >= 0 && value.producer == fused_clip_) {
    // The clip's input (when Bypasses skipped it) or its output (when the interpreter
    // could not overwrite the input and ran it): clamping either in place gives the
    // output.
    fused_clip_ = -1;
    at::Tensor x = v.toTensor();
    it->second.ObserveClamped(x, fused_bounds_.first, fused_bounds_.second);
    return;
  }
  // A value whose dtype was not known at placement may turn out not to be floating point.
  if (!v.toTensor().is_floating_point()) {
    if (mode_ == Mode::kCalibrate) non_float_.insert(value.id);
    return;
  }
  if (mode_ == Mode::kCalibrate) {
    it->second.Observe(v.toTensor());
  } else if (auto g = quantize_linear_.find(value.id); g != quantize_linear_.end()) {
    v = QuantizeLinear(v.toTensor(), g->second);
  } else {
    // The raw output is replaced right here, so no one else can see it: a fresh tensor
    // from a compute op may be quantized in place. Model inputs belong to the caller.
    const bool owned = value.producer >= 0 &&
                       ProducesFreshTensor(graph_.nodes[value.producer].kind);
    v = it->second.Apply(v.toTensor(), owned);
  }
}

std::optional<UInt8Grid> QuantSim::ActivationGrid(int value_id) const {
  auto it = act_quantizers_.find(value_id);
  if (it == act_quantizers_.end()) return std::nullopt;
  const Quantizer& q = it->second;
  if (!q.enabled() || !q.has_encodings() || q.axis() >= 0) return std::nullopt;
  const Encoding& e = q.encodings()[0];
  // Exactly uint8's grid: smaller grids are exported with a Clip before the pair, which
  // keeps ONNX Runtime from fusing the layer.
  if (e.bitwidth != 8 || e.num_steps != 255 || e.offset > 0 || e.offset < -255) return std::nullopt;
  UInt8Grid g;
  g.scale = static_cast<float>(e.scale);
  g.inv_scale = 1.0f / g.scale;
  g.zero_point = -e.offset;
  return g;
}

std::optional<UInt8Grid> QuantSim::QuantizeLinearGrid(int value_id) const {
  if (options_.kernels != QuantSimOptions::Kernels::kOnnxRuntimeInt8) return std::nullopt;
  return ActivationGrid(value_id);
}

int QuantSim::GridSource(int value_id) const {
  static const std::set<std::string> kMoves = {
      "aten::max_pool2d", "aten::contiguous", "aten::detach", "aten::clone", "aten::transpose", "aten::permute",
      "aten::t", "aten::chunk", "aten::split", "aten::split_with_sizes", "prim::ListUnpack"};
  for (;;) {
    if (act_quantizers_.count(value_id)) return value_id;
    const Value& v = graph_.values[value_id];
    if (v.producer < 0) return -1;
    const Node& p = graph_.nodes[v.producer];
    const bool moves = p.kind == OpKind::kFlatten || p.kind == OpKind::kDropout || kMoves.count(p.op) > 0;
    if (!moves || p.parent >= 0 || p.inputs.empty()) return -1;
    value_id = p.inputs[0];
  }
}

// ONNX Runtime moves a DequantizeLinear across the ops GridSource follows (the ONNX
// export requantizes Split's pieces on their grid, where it would not).
std::optional<UInt8Grid> QuantSim::InputGrid(int value_id) const {
  const int source = GridSource(value_id);
  return source < 0 ? std::nullopt : ActivationGrid(source);
}

// ONNX Runtime removes a ReLU before a QuantizeLinear whose zero point is the grid's
// bottom, and a Clip whose bounds hold the QuantizeLinear's whole range (within float
// epsilon); the layer before it then fuses with the QuantizeLinear.
int QuantSim::KernelOutput(const Node& n) const {
  if (n.outputs.size() != 1) return -1;
  const int out = n.outputs[0];
  if (act_quantizers_.count(out)) return ActivationGrid(out) ? out : -1;
  const std::vector<int>& readers = graph_.values[out].consumers;
  if (readers.size() != 1 || graph_.IsReturned(out)) return -1;
  const Node& next = graph_.nodes[readers[0]];
  if ((next.kind != OpKind::kRelu && next.kind != OpKind::kClip) || next.removed || next.outputs.size() != 1) {
    return -1;
  }
  const std::optional<UInt8Grid> grid = ActivationGrid(next.outputs[0]);
  if (!grid) return -1;
  if (next.kind == OpKind::kRelu) return grid->zero_point == 0 ? next.outputs[0] : -1;
  const std::optional<ClipRange> clip = ClipBounds(graph_, next);
  if (!clip || clip->lo.numel() != 1 || clip->hi.numel() != 1) return -1;
  const float lo = static_cast<float>(clip->lo.item<double>());
  const float hi = static_cast<float>(clip->hi.item<double>());
  const float lower = grid->scale * static_cast<float>(0 - grid->zero_point);
  const float upper = grid->scale * static_cast<float>(255 - grid->zero_point);
  return FLT_EPSILON < lo - lower || FLT_EPSILON < upper - hi ? -1 : next.outputs[0];
}

std::optional<IntegerKernel> QuantSim::PlanKernel(const Node& n) const {
  if (n.parent >= 0 || n.removed || n.outputs.size() != 1) return std::nullopt;
  IntegerKernel k;
  auto constant = [&](size_t i) -> const c10::IValue* {
    return i < n.inputs.size() && graph_.values[n.inputs[i]].constant ? &*graph_.values[n.inputs[i]].constant : nullptr;
  };
  if (n.kind == OpKind::kConv) {
    k.kind = IntegerKernel::Kind::kConv;
    if (n.op != "aten::_convolution" && n.op != "aten::conv2d") return std::nullopt;
    const c10::IValue* padding = constant(4);
    if (!padding || !padding->isIntList()) return std::nullopt;
  } else if (n.kind == OpKind::kAdd) {
    k.kind = IntegerKernel::Kind::kAdd;
    const c10::IValue* alpha = constant(2);
    if (n.inputs.size() != 3 || constant(0) || constant(1) || !alpha || alpha->toScalar().toDouble() != 1.0) {
      return std::nullopt;
    }
  } else if (n.op == "aten::adaptive_avg_pool2d") {
    k.kind = IntegerKernel::Kind::kGlobalAveragePool;
    const c10::IValue* size = constant(1);
    if (!size || !size->isIntList() || size->toIntVector() != std::vector<int64_t>{1, 1}) return std::nullopt;
  } else {
    return std::nullopt;
  }
  const size_t operands = k.kind == IntegerKernel::Kind::kAdd ? 2 : 1;
  for (size_t i = 0; i < operands; ++i) {
    std::optional<UInt8Grid> g = InputGrid(n.inputs[i]);
    if (!g) return std::nullopt;
    k.inputs.push_back(*g);
  }
  k.output_value = KernelOutput(n);
  if (k.output_value < 0) return std::nullopt;
  k.output = *ActivationGrid(k.output_value);
  const UInt8Grid& in = k.inputs[0];
  if (k.kind == IntegerKernel::Kind::kAdd) {
    const UInt8Grid& b = k.inputs[1];
    k.ratio_a = in.scale / k.output.scale;
    k.ratio_b = b.scale / k.output.scale;
    const float from_a = k.ratio_a * static_cast<float>(in.zero_point);
    const float from_b = k.ratio_b * static_cast<float>(b.zero_point);
    const float sum = from_a + from_b;
    k.fixed = static_cast<float>(k.output.zero_point) - sum;
    return k;
  }
  if (k.kind != IntegerKernel::Kind::kConv) return k;

  const int weight = n.Param("weight");
  auto wq = param_quantizers_.find(weight);
  if (weight < 0 || weight != n.inputs[1] || wq == param_quantizers_.end() || !wq->second.enabled() ||
      !wq->second.has_encodings() || wq->second.spec().bitwidth > 8) {
    return std::nullopt;
  }
  const int bias = n.Param("bias");
  if (auto bq = param_quantizers_.find(bias); bias >= 0 && bq != param_quantizers_.end() && bq->second.enabled()) {
    return std::nullopt;
  }
  const at::Tensor& w = quantized_params_.at(weight);
  if (w.dim() != 4) return std::nullopt;
  const std::vector<Encoding>& enc = wq->second.encodings();
  const int64_t channels = w.size(0);
  std::vector<float> w_scales(channels);
  for (int64_t c = 0; c < channels; ++c) w_scales[c] = static_cast<float>(enc[enc.size() == 1 ? 0 : c].scale);
  at::Tensor& integers = integer_weights_[weight];
  if (!integers.defined()) {
    integers = at::round(w.div(at::tensor(w_scales, at::kFloat).view({-1, 1, 1, 1}))).to(at::kDouble);
  }
  k.weight = integers;
  std::vector<float> multiplier(channels);
  std::vector<double> bias_int32(channels);
  const at::Tensor b = bias >= 0 ? graph_.values[bias].constant->toTensor().to(at::kFloat).contiguous() : at::Tensor();
  for (int64_t c = 0; c < channels; ++c) {
    const float bias_scale = in.scale * w_scales[c];
    multiplier[c] = bias_scale / k.output.scale;
    if (b.defined()) bias_int32[c] = std::nearbyint(b.data_ptr<float>()[c] / bias_scale);
  }
  k.multiplier = at::tensor(multiplier, at::kFloat);
  if (b.defined()) k.bias = at::tensor(bias_int32, at::kDouble);
  return k;
}

std::map<int, IntegerKernel> QuantSim::IntegerKernels() const {
  std::map<int, IntegerKernel> kernels;
  if (options_.kernels != QuantSimOptions::Kernels::kOnnxRuntimeInt8) return kernels;
  for (const Node* n : graph_.LiveNodes()) {
    if (std::optional<IntegerKernel> k = PlanKernel(*n)) kernels.emplace(n->id, std::move(*k));
  }
  return kernels;
}

}  // namespace qopt
