// What the compression steps (spatial_svd, weight_svd, channel_pruning) share: scoring
// candidates on the evaluation data, the saved eval dictionary, the run of
// compress/compression.h, and the step's report and artifact.
#pragma once

#include "compress/compression.h"
#include "qopt/v1/recipe.pb.h"
#include "recipe/steps/run_context.h"

namespace qopt {

/// Compresses the run's model by `method` with the step's ratios (defaults filled in);
/// `options` carries the method's own settings (multiplicity, reconstruction).
absl::Status RunCompression(const v1::CompressionRatios& ratios, CompressionOptions options, RunContext& run);

}  // namespace qopt
