// AdaRound's options from the recipe (defaults filled in): the adaround step and
// auto_quant's AdaRound stage share them.
#pragma once

#include "qopt/v1/recipe.pb.h"
#include "techniques/adaround.h"

namespace qopt {

AdaRoundOptions AdaRoundOptionsFrom(const v1::AdaRoundStep& a);

}  // namespace qopt
