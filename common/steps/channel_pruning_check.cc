// channel_pruning: removes convolutions' input channels and refits their weights.
#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/compression_check.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

void FillDefaults(v1::Step* step) {
  auto* s = step->mutable_channel_pruning();
  FillRatioDefaults(s->mutable_ratios());
  if (s->multiplicity() == 0) s->set_multiplicity(1);
  if (s->num_reconstruction_samples() == 0) s->set_num_reconstruction_samples(5000);
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  const auto& s = step.channel_pruning();
  if (s.multiplicity() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": channel_pruning.multiplicity must be >= 1, got ", s.multiplicity()));
  }
  if (s.num_reconstruction_samples() < 1 || s.num_reconstruction_samples() > 1000000) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": channel_pruning.num_reconstruction_samples must be in 1..1000000, got ", s.num_reconstruction_samples()));
  }
  return CheckRatios(where, "channel_pruning", s.ratios());
}

std::vector<std::string> Artifacts(const v1::Step& step) {
  return RatioArtifacts("channel_pruning", step.channel_pruning().ratios());
}

}  // namespace

const StepSpec& ChannelPruningSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kChannelPruning;
    s.invalidates_sim = true;
    s.reads_data = true;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    s.artifacts = Artifacts;
    return s;
  }();
  return spec;
}

}  // namespace qopt
