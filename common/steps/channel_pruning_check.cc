// channel_pruning: removes convolutions' input channels and refits their weights.
#include "absl/strings/str_cat.h"
#include "steps/compression_check.h"

namespace qopt {
namespace {

void FillReconstruction(v1::ChannelPruningStep* s) {
  if (s->num_reconstruction_samples() == 0) s->set_num_reconstruction_samples(5000);
}

absl::Status CheckReconstruction(const std::string& where, const v1::ChannelPruningStep& s) {
  if (s.num_reconstruction_samples() < 1 || s.num_reconstruction_samples() > 1000000) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": channel_pruning.num_reconstruction_samples must be in 1..1000000, got ", s.num_reconstruction_samples()));
  }
  return absl::OkStatus();
}

}  // namespace

const StepSpec& ChannelPruningSpec() {
  static const StepSpec spec =
      CompressionStep<v1::ChannelPruningStep, &v1::Step::channel_pruning, &v1::Step::mutable_channel_pruning,
                      FillReconstruction, CheckReconstruction>::Spec(v1::Step::kChannelPruning);
  return spec;
}

}  // namespace qopt
