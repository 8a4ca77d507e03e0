// Checks of a recipe that need no model and no files: step order and arguments, the
// data each step needs, quantization settings and preprocessing. The engine runs them
// before anything else, and qopt-server runs them at submit time so a malformed job is
// rejected with INVALID_ARGUMENT instead of failing on a worker later.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "qopt/v1/recipe.pb.h"
#include "steps/step_spec.h"  // StepName

namespace qopt {

/// InvalidArgument naming the field (e.g. "steps[2]: evaluate needs a calibrate step
/// before it"). Does not check that model or data files exist.
absl::Status CheckRecipe(const v1::Recipe& recipe);

/// Checks a data reference's options (preprocessing, batch size, format); errors start
/// with `field` ("calibration_data", "steps[3]: qat.data").
absl::Status CheckData(absl::string_view field, const v1::DataRef& ref);

/// What a recipe does, for metrics: its steps' names other than evaluate and export,
/// in order, without repeats, joined by '+' ("fold_batch_norm+calibrate"); "export"
/// for a recipe of evaluate / export steps only.
std::string RecipeTechnique(const v1::Recipe& recipe);

}  // namespace qopt
