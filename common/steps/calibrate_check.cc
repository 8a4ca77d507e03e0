// calibrate: builds the simulation and observes calibration batches. A second calibrate
// would throw the first away, so it counts as invalidating one.
#include "steps/step_spec.h"

namespace qopt {
namespace {

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  if (step.calibrate().num_batches() < 0) {
    return absl::InvalidArgumentError(where + ": calibrate.num_batches must be >= 0");
  }
  return absl::OkStatus();
}

}  // namespace

const StepSpec& CalibrateSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kCalibrate;
    s.invalidates_sim = true;
    s.calibrates = true;
    s.part_of_auto_quant = true;
    s.reads_data = true;
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
