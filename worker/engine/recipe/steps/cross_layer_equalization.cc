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
  nlohmann::ordered_json& part = run.part();
  part["chains"] = eq.chains;
  auto absorbed = nlohmann::ordered_json::array();
  for (const auto& [from, to] : eq.absorbed) absorbed.push_back({from, to});
  part["high_bias_absorbed"] = absorbed;
  part["relu6_clipped_per_channel"] = eq.clipped_relu6;
  size_t layers = 0;
  for (const auto& chain : eq.chains) layers += chain.size();
  return run.Log(absl::StrCat("cross_layer_equalization: ", eq.chains.size(), " chains over ", layers, " layers, ",
                              eq.absorbed.size(), " high biases absorbed"));
}

}  // namespace qopt
