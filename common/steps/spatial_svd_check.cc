// spatial_svd: splits k x k convolutions into a vertical and a horizontal one.
#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/compression_check.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

void FillDefaults(v1::Step* step) {
  auto* s = step->mutable_spatial_svd();
  FillRatioDefaults(s->mutable_ratios());
  if (s->multiplicity() == 0) s->set_multiplicity(1);
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  const auto& s = step.spatial_svd();
  if (s.multiplicity() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": spatial_svd.multiplicity must be >= 1, got ", s.multiplicity()));
  }
  return CheckRatios(where, "spatial_svd", s.ratios());
}

std::vector<std::string> Artifacts(const v1::Step& step) { return RatioArtifacts("spatial_svd", step.spatial_svd().ratios()); }

}  // namespace

const StepSpec& SpatialSvdSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kSpatialSvd;
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
