// evaluate: compares the calibrated simulation with the floating-point model.
#include "steps/step_spec.h"

namespace qopt {
namespace {

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  if (step.evaluate().num_batches() < 0) {
    return absl::InvalidArgumentError(where + ": evaluate.num_batches must be >= 0");
  }
  return absl::OkStatus();
}

}  // namespace

const StepSpec& EvaluateSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kEvaluate;
    s.requires_sim = true;
    s.reads_data = true;
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
