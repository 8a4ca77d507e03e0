#include "recipe_check.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "calibration_method.h"
#include "file_name.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

// Where a step may stand, from what its spec says it requires and invalidates.
absl::Status CheckOrder(const std::string& where, const std::string& name, const StepSpec& spec,
                        const StepsBefore& before) {
  if (spec.part_of_auto_quant && before.automatic) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", name, " cannot be combined with auto_quant, which runs it itself"));
  }
  if (spec.invalidates_sim && before.calibrated) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, " must come before calibrate"));
  }
  if (spec.requires_sim && !before.calibrated) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, " needs a calibrate step before it"));
  }
  return absl::OkStatus();
}

absl::Status CheckSteps(const v1::Recipe& recipe) {
  if (recipe.steps().empty()) return absl::InvalidArgumentError("recipe has no steps");
  StepsBefore before;
  bool needs_data = false;
  std::map<std::string, std::string> written;  // artifact name -> the step that writes it
  for (int i = 0; i < recipe.steps_size(); ++i) {
    const std::string where = absl::StrCat("steps[", i, "]");
    const StepSpec* spec = FindStepSpec(recipe.steps(i).kind_case());
    if (spec == nullptr) return absl::InvalidArgumentError(where + ": step names no operation");
    const v1::Step step = StepWithDefaults(recipe.steps(i));
    RETURN_IF_ERROR(CheckOrder(where, StepName(step), *spec, before));
    if (spec->check != nullptr) RETURN_IF_ERROR(spec->check(where, step, before));
    if (spec->artifacts != nullptr) {
      for (const std::string& name : spec->artifacts(step)) {
        RETURN_IF_ERROR(Annotate(CheckPlainFileName("artifact", name), where));
        if (const auto [it, fresh] = written.emplace(name, where); !fresh) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": ", StepName(step), " writes ", name, ", which ", it->second,
              " already writes; give it another prefix"));
        }
      }
    }
    before.calibrated |= spec->calibrates;
    before.automatic |= spec->automatic;
    before.folded |= spec->folds_batch_norm;
    before.rounded |= spec->learns_rounding;
    needs_data |= spec->reads_data;
  }
  if (needs_data && recipe.calibration_data().path().empty() && recipe.calibration_data().name().empty()) {
    return absl::InvalidArgumentError(
        "recipe needs calibration data: set calibration_data.path (or .name) or pass --data");
  }
  return absl::OkStatus();
}

absl::Status CheckQuantization(const v1::QuantizationSettings& q) {
  for (const auto& [field, bits] : {std::pair<const char*, int>{"param_bitwidth", q.param_bitwidth()},
                                    {"activation_bitwidth", q.activation_bitwidth()}}) {
    if (bits != 0 && (bits < 2 || bits > 16)) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantization.", field, " must be in 2..16, got ", bits));
    }
  }
  for (const auto& [field, name] : {std::pair<const char*, std::string>{"param_calibration", q.param_calibration()},
                                    {"activation_calibration", q.activation_calibration()}}) {
    if (name.empty()) continue;
    RETURN_IF_ERROR(Annotate(ParseCalibrationMethod(name).status(), absl::StrCat("quantization.", field)));
  }
  if (q.percentile() != 0.0 && !(q.percentile() > 50.0 && q.percentile() <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization.percentile must be in (50, 100], got ", q.percentile()));
  }
  for (const std::string& layer : q.exclude_layers()) {
    if (layer.empty()) return absl::InvalidArgumentError("quantization.exclude_layers has an empty name");
  }
  return absl::OkStatus();
}

absl::Status CheckDevice(const std::string& device) {
  if (device.empty() || device == "cpu" || device == "cuda") return absl::OkStatus();
  int index = 0;
  if (absl::StartsWith(device, "cuda:") && absl::SimpleAtoi(device.substr(5), &index) && index >= 0) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("device '", device, "' is not cpu or cuda:N"));
}

}  // namespace

absl::Status CheckData(absl::string_view field, const v1::DataRef& ref) {
  const v1::Preprocess& p = ref.preprocess();
  if (p.resize() < 0 || p.center_crop() < 0 || (p.channels() != 0 && p.channels() != 1 && p.channels() != 3)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".preprocess: resize and center_crop must be >= 0, channels 0, 1 or 3"));
  }
  for (double s : p.std()) {
    if (!(s > 0)) return absl::InvalidArgumentError(absl::StrCat(field, ".preprocess.std must be > 0"));
  }
  if (ref.batch_size() < 0 || ref.max_samples() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": batch_size and max_samples must be >= 0"));
  }
  static constexpr absl::string_view kFormats[] = {"", "auto", "idx", "npy", "npz", "torch", "image_folder"};
  if (std::find(std::begin(kFormats), std::end(kFormats), ref.format()) == std::end(kFormats)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".format '", ref.format(), "' is not one of auto, idx, npy, npz, torch, image_folder"));
  }
  return absl::OkStatus();
}

absl::Status CheckRecipe(const v1::Recipe& recipe) {
  RETURN_IF_ERROR(CheckSteps(recipe));
  RETURN_IF_ERROR(CheckData("calibration_data", recipe.calibration_data()));
  RETURN_IF_ERROR(CheckData("evaluation_data", recipe.evaluation_data()));
  RETURN_IF_ERROR(CheckData("validation_data", recipe.validation_data()));
  RETURN_IF_ERROR(CheckQuantization(recipe.quantization()));
  RETURN_IF_ERROR(CheckDevice(recipe.device()));
  static constexpr absl::string_view kMetrics[] = {"", "auto", "top1", "psnr", "miou"};
  if (std::find(std::begin(kMetrics), std::end(kMetrics), recipe.metric()) == std::end(kMetrics)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metric '", recipe.metric(), "' is not one of auto, top1, psnr, miou"));
  }
  if (recipe.num_threads() < 0) return absl::InvalidArgumentError("num_threads must be >= 0");
  if (recipe.time_limit_seconds() < 0) return absl::InvalidArgumentError("time_limit_seconds must be >= 0");
  return absl::OkStatus();
}

std::string RecipeTechnique(const v1::Recipe& recipe) {
  std::vector<std::string> names;
  for (const v1::Step& step : recipe.steps()) {
    const std::string name = StepName(step);
    if (name.empty() || name == "evaluate" || name == "export") continue;
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  return names.empty() ? "export" : absl::StrJoin(names, "+");
}

}  // namespace qopt
