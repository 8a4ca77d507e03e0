// auto_quant: folds, equalizes, calibrates and rounds fresh copies of the model itself,
// so the steps it runs may not stand before or after it.
#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/adaround_check.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore& before) {
  if (before.calibrated) {
    return absl::InvalidArgumentError(where + ": auto_quant does its own folding, equalization and calibration; "
                                      "remove those steps");
  }
  const v1::AutoQuantStep& aq = step.auto_quant();
  if (!(aq.allowed_drop() >= 0 && aq.allowed_drop() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": auto_quant.allowed_drop is a fraction in [0, 1) (0.01 = 1 point), got ", aq.allowed_drop()));
  }
  if (aq.eval_batches() < 0) return absl::InvalidArgumentError(where + ": auto_quant.eval_batches must be >= 0");
  return CheckAdaRoundOptions(where + ": auto_quant.adaround", aq.adaround());
}

void FillDefaults(v1::Step* step) {
  v1::AutoQuantStep* aq = step->mutable_auto_quant();
  if (aq->allowed_drop() == 0) aq->set_allowed_drop(0.01);
  FillAdaRoundDefaults(aq->mutable_adaround());
}

}  // namespace

const StepSpec& AutoQuantSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kAutoQuant;
    s.order_rule = "No step that calibrates may come before it: it folds, equalizes and calibrates fresh copies of the model itself.";
    s.calibrates = true;
    s.automatic = true;
    s.learns_rounding = true;
    s.folds_batch_norm = true;
    s.reads_data = true;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
