// channel_pruning: see CompressionRatios and ChannelPruningStep in recipe.proto; the shared run is
// recipe/steps/compression.cc.
#include "recipe/steps/compression.h"

namespace qopt {

absl::Status RunChannelPruningStep(const v1::Step& step, RunContext& run) {
  const auto& s = step.channel_pruning();
  CompressionOptions options;
  options.method = CompressionMethod::kChannelPruning;
  options.multiplicity = s.multiplicity();
  options.pruning.multiplicity = s.multiplicity();
  options.pruning.num_samples = s.num_reconstruction_samples();
  options.pruning.seed = s.seed();
  return RunCompression(s.ratios(), std::move(options), run);
}

}  // namespace qopt
