// weight_svd: see CompressionRatios and WeightSvdStep in recipe.proto; the shared run is
// recipe/steps/compression.cc.
#include "recipe/steps/compression.h"

namespace qopt {

absl::Status RunWeightSvdStep(const v1::Step& step, RunContext& run) {
  const auto& s = step.weight_svd();
  CompressionOptions options;
  options.method = CompressionMethod::kWeightSvd;
  options.multiplicity = s.multiplicity();
  return RunCompression(s.ratios(), std::move(options), run);
}

}  // namespace qopt
