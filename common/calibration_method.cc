#include "calibration_method.h"

#include "absl/strings/str_cat.h"

namespace qopt {

absl::StatusOr<CalibrationMethod> ParseCalibrationMethod(std::string_view name) {
  if (name == "min_max" || name == "minmax" || name == "tf" || name == "post_training_tf")
    return CalibrationMethod::kMinMax;
  if (name == "sqnr" || name == "tf_enhanced" || name == "post_training_tf_enhanced")
    return CalibrationMethod::kSqnr;
  if (name == "percentile" || name == "post_training_percentile")
    return CalibrationMethod::kPercentile;
  if (name == "mse") return CalibrationMethod::kMse;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown calibration method '", std::string(name),
      "': use min_max, sqnr, percentile or mse (AIMET aliases: tf, tf_enhanced)"));
}

std::string_view CalibrationMethodName(CalibrationMethod m) {
  switch (m) {
    case CalibrationMethod::kMinMax: return "min_max";
    case CalibrationMethod::kSqnr: return "sqnr";
    case CalibrationMethod::kPercentile: return "percentile";
    case CalibrationMethod::kMse: return "mse";
  }
  return "?";
}

}  // namespace qopt
