// spatial_svd: see CompressionRatios and SpatialSvdStep in recipe.proto; the shared run is
// recipe/steps/compression.cc.
#include "recipe/steps/compression.h"

namespace qopt {

absl::Status RunSpatialSvdStep(const v1::Step& step, RunContext& run) {
  const auto& s = step.spatial_svd();
  CompressionOptions options;
  options.method = CompressionMethod::kSpatialSvd;
  options.multiplicity = s.multiplicity();
  return RunCompression(s.ratios(), std::move(options), run);
}

}  // namespace qopt
