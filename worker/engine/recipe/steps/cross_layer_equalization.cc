// cross_layer_equalization: equalizes weight ranges along conv / linear chains, then
// absorbs high biases (unless skipped).
#include "absl/strings/str_cat.h"
#include "passes/cross_layer_equalization.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {

absl::Status RunCrossLayerEqualizationStep(const v1::Step& step, RunContext& run) {
  CleOptions options;
  options.high_bias_absorption = !step.cross_layer_equalization().skip_high_bias_absorption();
  ASSIGN_OR_RETURN(CleReport eq, CrossLayerEqualize(*run.graph, options));
  nlohmann::ordered_json details;
  details["chains"] = eq.chains;
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
