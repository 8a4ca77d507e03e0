// cross_layer_equalization: equalizes weight ranges along conv / linear chains, then
// absorbs high biases (unless skipped).
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "analysis/quant_analyzer.h"
#include "passes/cross_layer_equalization.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {
namespace {

using Ranges = std::pair<std::vector<double>, std::vector<double>>;  // per output channel: min, max

std::map<std::string, Ranges> WeightRanges(const Graph& g) {
  std::map<std::string, Ranges> out;
  for (const Node* n : g.LiveNodes()) {
    const int w = (n->kind == OpKind::kConv || n->kind == OpKind::kLinear) ? n->Param("weight") : -1;
    if (w < 0 || !g.values[w].constant) continue;
    Ranges& r = out[n->name];
    WeightRangePerChannel(g.values[w].constant->toTensor(), &r.first, &r.second);
  }
  return out;
}

void AddRangeSeries(v1::StepReport& part, const std::string& layer, const Ranges& r, const char* when) {
  for (const auto& [which, values] : {std::pair{"min", &r.first}, {"max", &r.second}}) {
    v1::Series* s = part.add_series();
    s->set_name(absl::StrCat(layer, " weight ", which, " per channel ", when));
    for (size_t c = 0; c < values->size(); ++c) s->add_x(static_cast<double>(c));
    s->mutable_y()->Add(values->begin(), values->end());
  }
}

}  // namespace

absl::Status RunCrossLayerEqualizationStep(const v1::Step& step, RunContext& run) {
  CleOptions options;
  options.high_bias_absorption = !step.cross_layer_equalization().skip_high_bias_absorption();
  const std::map<std::string, Ranges> before = WeightRanges(*run.graph);
  ASSIGN_OR_RETURN(CleReport eq, CrossLayerEqualize(*run.graph, options));
  // Each equalized layer's weight ranges per output channel, before and after.
  const std::map<std::string, Ranges> after = WeightRanges(*run.graph);
  std::set<std::string> shown;
  for (const auto& chain : eq.chains) {
    for (const std::string& layer : chain) {
      if (!before.count(layer) || !after.count(layer) || !shown.insert(layer).second) continue;
      AddRangeSeries(run.part(), layer, before.at(layer), "before");
      AddRangeSeries(run.part(), layer, after.at(layer), "after");
    }
  }
  nlohmann::ordered_json details;
  details["chains"] = eq.chains;
  // What equalization did to each chain: its channel scales' range (1 .. 1: nothing).
  nlohmann::ordered_json scales = nlohmann::ordered_json::array();
  for (const auto& [lo, hi] : eq.scale_ranges) scales.push_back({{"min", lo}, {"max", hi}});
  details["chain_scale_ranges"] = scales;
  details["high_bias_absorbed"] = eq.absorbed;
  details["relu6_clipped_per_channel"] = eq.clipped_relu6;
  RETURN_IF_ERROR(SetDetails(details, &run.part()));
  size_t layers = 0;
  for (const auto& chain : eq.chains) layers += chain.size();
  auto& figures = *run.part().mutable_figures();
  figures["chains"] = eq.chains.size();
  figures["layers"] = layers;
  figures["high_biases_absorbed"] = eq.absorbed.size();
  return run.Log(absl::StrCat("cross_layer_equalization: ", eq.chains.size(), " chains over ", layers, " layers, ",
                              eq.absorbed.size(), " high biases absorbed"));
}

}  // namespace qopt
