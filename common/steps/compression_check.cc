#include "steps/compression_check.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/step_spec.h"
#include "steps/training_check.h"

namespace qopt {

void FillRatioDefaults(v1::CompressionRatios* r) {
  if (r->target_ratio() == 0) r->set_target_ratio(0.5);
  if (r->cost_metric().empty()) r->set_cost_metric("macs");
  if (r->num_candidates() == 0) r->set_num_candidates(10);
  if (r->selection().empty()) r->set_selection("greedy");
}

absl::Status CheckRatios(const std::string& where, const std::string& step, const v1::CompressionRatios& r) {
  const std::string prefix = step + ".ratios.";
  auto invalid = [&](const std::string& what) { return absl::InvalidArgumentError(absl::StrCat(where, ": ", prefix, what)); };
  if (!(r.target_ratio() > 0 && r.target_ratio() <= 1)) {
    return invalid(absl::StrCat("target_ratio must be in (0, 1] (compressed cost / original cost), got ", r.target_ratio()));
  }
  RETURN_IF_ERROR(CheckOneOf(where, prefix + "cost_metric", r.cost_metric(), {"macs", "memory"}));
  RETURN_IF_ERROR(CheckOneOf(where, prefix + "selection", r.selection(), {"greedy", "manual"}));
  if (r.num_candidates() < 2 || r.num_candidates() > 100) {
    return invalid(absl::StrCat("num_candidates must be in 2..100, got ", r.num_candidates()));
  }
  if (r.eval_batches() < 0) return invalid("eval_batches must be >= 0");
  if (r.selection() == "manual" && r.layer_ratios().empty()) {
    return invalid("layer_ratios is empty: manual selection compresses only the layers it names");
  }
  for (const auto& [layer, ratio] : r.layer_ratios()) {
    if (layer.empty()) return invalid("layer_ratios has an empty layer name");
    if (!(ratio > 0 && ratio <= 1)) return invalid(absl::StrCat("layer_ratios[", layer, "] must be in (0, 1], got ", ratio));
  }
  RETURN_IF_ERROR(CheckLayerNames(where, (prefix + "exclude_layers").c_str(), r.exclude_layers()));
  for (const std::string& layer : r.exclude_layers()) {
    if (r.layer_ratios().count(layer)) return invalid(absl::StrCat("exclude_layers and layer_ratios both name ", layer));
  }
  if (r.has_data()) RETURN_IF_ERROR(CheckData(absl::StrCat(where, ": ", prefix, "data"), r.data()));
  if (r.selection() == "manual" && !r.eval_scores_path().empty()) {
    return invalid("eval_scores_path is for greedy selection; manual ratios evaluate nothing");
  }
  return absl::OkStatus();
}

std::vector<std::string> RatioArtifacts(const std::string& step, const v1::CompressionRatios& r) {
  if (r.selection() != "greedy") return {};
  return {step + "_eval_scores.json"};
}

}  // namespace qopt
