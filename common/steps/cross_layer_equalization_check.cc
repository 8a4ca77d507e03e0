// cross_layer_equalization: rescales weights, so it comes before calibrate.
#include "steps/step_spec.h"

namespace qopt {

const StepSpec& CrossLayerEqualizationSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kCrossLayerEqualization;
    s.invalidates_sim = true;
    s.part_of_auto_quant = true;
    return s;
  }();
  return spec;
}

}  // namespace qopt
