// AdaRound's options: the adaround step's and auto_quant's AdaRound stage share them.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

/// AIMET's defaults in place of zeros: reg_param 0.01, beta 20 -> 2, warm_start 0.2,
/// learning_rate 0.001, memory_budget_mb 1024. num_iterations and batch_size stay 0:
/// AdaRound picks them per layer (bitwidth, input size).
void FillAdaRoundDefaults(v1::AdaRoundStep* a);

/// InvalidArgument starting with `where` for options out of range (defaults filled in).
absl::Status CheckAdaRoundOptions(const std::string& where, const v1::AdaRoundStep& a);

}  // namespace qopt
