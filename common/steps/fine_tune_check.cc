// fine_tune: trains the floating-point model (after compression), before calibrate.
#include "steps/step_spec.h"
#include "steps/training_check.h"

namespace qopt {
namespace {

// Recovering from compression takes larger steps than QAT's nudges: 1e-2 with momentum
// and a cosine decay, over two epochs.
void FillDefaults(v1::Step* step) { FillTrainingDefaults(step->mutable_fine_tune(), /*epochs=*/2, 1e-2); }

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  return CheckTrainingOptions(where, "fine_tune", step.fine_tune());
}

}  // namespace

const StepSpec& FineTuneSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kFineTune;
    s.invalidates_sim = true;
    s.reads_data = true;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
