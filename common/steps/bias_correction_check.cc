// bias_correction: corrects the calibrated simulation's weights' mean output shift.
#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  const v1::BiasCorrectionStep& bc = step.bias_correction();
  if (bc.mode() != "empirical" && bc.mode() != "analytical") {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": bias_correction.mode '", bc.mode(), "' is not empirical or analytical"));
  }
  if (bc.num_batches() < 0) return absl::InvalidArgumentError(where + ": bias_correction.num_batches must be >= 0");
  return CheckLayerNames(where, "bias_correction.skip_layers", bc.skip_layers());
}

// Empirical correction from 16 batches: enough for stable per-channel means, and
// bounded time on large calibration sets.
void FillDefaults(v1::Step* step) {
  v1::BiasCorrectionStep* bc = step->mutable_bias_correction();
  if (bc->mode().empty()) bc->set_mode("empirical");
  if (bc->num_batches() == 0) bc->set_num_batches(16);
}

}  // namespace

const StepSpec& BiasCorrectionSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kBiasCorrection;
    s.requires_sim = true;
    s.reads_data = true;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
