// Checks of a recipe that need no model and no files: step order and arguments, the
// data each step needs, quantization settings and preprocessing. The engine runs them
// before anything else, and qopt-server runs them at submit time so a malformed job is
// rejected with INVALID_ARGUMENT instead of failing on a worker later.
#pragma once

#include "absl/status/status.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

/// InvalidArgument naming the field (e.g. "steps[2]: evaluate needs a calibrate step
/// before it"). Does not check that model or data files exist.
absl::Status CheckRecipe(const v1::Recipe& recipe);

}  // namespace qopt
