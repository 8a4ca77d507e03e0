// fold_batch_norm: folds each batch norm into the conv / linear before it, changing the
// weights a simulation would have been calibrated on.
#include "steps/step_spec.h"

namespace qopt {

const StepSpec& FoldBatchNormSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kFoldBatchNorm;
    s.invalidates_sim = true;
    s.part_of_auto_quant = true;
    s.folds_batch_norm = true;
    return s;
  }();
  return spec;
}

}  // namespace qopt
