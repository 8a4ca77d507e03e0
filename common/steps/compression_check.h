// What the compression steps (spatial_svd, weight_svd, channel_pruning) share: their ratio
// selection's defaults, checks and artifact.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

/// target_ratio 0.5, cost_metric "macs", num_candidates 10, selection "greedy".
void FillRatioDefaults(v1::CompressionRatios* r);

/// InvalidArgument "<where>: <step>.ratios.<field> ..." for options out of range: a
/// target or layer ratio outside (0, 1], an unknown metric or selection, manual
/// selection without layer ratios, a layer both excluded and given a ratio.
absl::Status CheckRatios(const std::string& where, const std::string& step, const v1::CompressionRatios& r);

/// The eval dictionary's artifact, "<step>_eval_scores.json", when the selection is
/// greedy; none for manual ratios.
std::vector<std::string> RatioArtifacts(const std::string& step, const v1::CompressionRatios& r);

}  // namespace qopt
