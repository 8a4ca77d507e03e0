// The encoding analyzers by name. Torch-free, so the server validates recipes with the
// same names the engine runs; AIMET's names are accepted as aliases ("tf" = min_max,
// "tf_enhanced" = sqnr).
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace qopt {

enum class CalibrationMethod { kMinMax, kSqnr, kPercentile, kMse };

absl::StatusOr<CalibrationMethod> ParseCalibrationMethod(std::string_view name);
std::string_view CalibrationMethodName(CalibrationMethod m);

}  // namespace qopt
