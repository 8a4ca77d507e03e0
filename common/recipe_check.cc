#include "recipe_check.h"

#include <algorithm>
#include <iterator>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "calibration_method.h"
#include "status.h"

namespace qopt {
namespace {

absl::Status CheckNames(const std::string& where, const char* field,
                        const google::protobuf::RepeatedPtrField<std::string>& names) {
  for (const std::string& name : names) {
    if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", field, " has an empty name"));
  }
  return absl::OkStatus();
}

absl::Status CheckAdaRound(const std::string& where, const v1::AdaRoundStep& a) {
  if (a.num_iterations() < 0 || a.num_batches() < 0 || a.batch_size() < 0 || a.memory_budget_mb() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": num_iterations, num_batches, batch_size and memory_budget_mb must be >= 0"));
  }
  if (a.reg_param() < 0 || a.learning_rate() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": reg_param and learning_rate must be >= 0"));
  }
  const double beta_start = a.beta_start() != 0 ? a.beta_start() : 20.0;
  const double beta_end = a.beta_end() != 0 ? a.beta_end() : 2.0;
  if (!(beta_end > 0 && beta_start >= beta_end)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": beta is annealed from beta_start down to beta_end > 0, got ", beta_start, " -> ", beta_end));
  }
  if (!(a.warm_start() >= 0 && a.warm_start() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": warm_start must be in [0, 1), got ", a.warm_start()));
  }
  return CheckNames(where, "skip_layers", a.skip_layers());
}

absl::Status CheckSteps(const v1::Recipe& recipe) {
  if (recipe.steps().empty()) return absl::InvalidArgumentError("recipe has no steps");
  bool calibrated = false;
  bool needs_data = false;
  bool automatic = false;
  for (int i = 0; i < recipe.steps_size(); ++i) {
    const v1::Step& step = recipe.steps(i);
    const std::string where = absl::StrCat("steps[", i, "]");
    auto after_calibrate = [&](const char* name) -> absl::Status {
      if (calibrated) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, " needs a calibrate step before it"));
    };
    auto before_calibrate = [&](const char* name) -> absl::Status {
      if (automatic) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, " cannot be combined with auto_quant, which runs it itself"));
      }
      if (!calibrated) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, " must come before calibrate"));
    };
    switch (step.kind_case()) {
      case v1::Step::kFoldBatchNorm:
        RETURN_IF_ERROR(before_calibrate("fold_batch_norm"));
        break;
      case v1::Step::kCrossLayerEqualization:
        RETURN_IF_ERROR(before_calibrate("cross_layer_equalization"));
        break;
      case v1::Step::kCalibrate:
        RETURN_IF_ERROR(before_calibrate("calibrate"));
        if (step.calibrate().num_batches() < 0) {
          return absl::InvalidArgumentError(where + ": calibrate.num_batches must be >= 0");
        }
        calibrated = true;
        needs_data = true;
        break;
      case v1::Step::kBiasCorrection: {
        RETURN_IF_ERROR(after_calibrate("bias_correction"));
        const v1::BiasCorrectionStep& bc = step.bias_correction();
        if (!bc.mode().empty() && bc.mode() != "empirical" && bc.mode() != "analytical") {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": bias_correction.mode '", bc.mode(), "' is not empirical or analytical"));
        }
        if (bc.num_batches() < 0) return absl::InvalidArgumentError(where + ": bias_correction.num_batches must be >= 0");
        RETURN_IF_ERROR(CheckNames(where, "bias_correction.skip_layers", bc.skip_layers()));
        needs_data = true;
        break;
      }
      case v1::Step::kAdaround:
        if (automatic) {
          return absl::InvalidArgumentError(where + ": adaround cannot be combined with auto_quant, which runs it itself");
        }
        RETURN_IF_ERROR(after_calibrate("adaround"));
        RETURN_IF_ERROR(CheckAdaRound(where + ": adaround", step.adaround()));
        break;
      case v1::Step::kAutoQuant: {
        if (calibrated) {
          return absl::InvalidArgumentError(where + ": auto_quant does its own folding, equalization and calibration; "
                                            "remove those steps");
        }
        const v1::AutoQuantStep& aq = step.auto_quant();
        if (!(aq.allowed_drop() >= 0 && aq.allowed_drop() < 1)) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": auto_quant.allowed_drop is a fraction in [0, 1) (0.01 = 1 point), got ", aq.allowed_drop()));
        }
        if (aq.eval_batches() < 0) return absl::InvalidArgumentError(where + ": auto_quant.eval_batches must be >= 0");
        RETURN_IF_ERROR(CheckAdaRound(where + ": auto_quant.adaround", aq.adaround()));
        automatic = calibrated = needs_data = true;
        break;
      }
      case v1::Step::kEvaluate:
        if (step.evaluate().num_batches() < 0) {
          return absl::InvalidArgumentError(where + ": evaluate.num_batches must be >= 0");
        }
        needs_data = true;
        RETURN_IF_ERROR(after_calibrate("evaluate"));
        break;
      case v1::Step::kExport:
        break;
      case v1::Step::KIND_NOT_SET:
        return absl::InvalidArgumentError(where + ": step names no operation");
    }
  }
  if (needs_data && recipe.calibration_data().path().empty() && recipe.calibration_data().name().empty()) {
    return absl::InvalidArgumentError(
        "recipe needs calibration data: set calibration_data.path (or .name) or pass --data");
  }
  return absl::OkStatus();
}

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

absl::Status CheckRecipe(const v1::Recipe& recipe) {
  RETURN_IF_ERROR(CheckSteps(recipe));
  RETURN_IF_ERROR(CheckData("calibration_data", recipe.calibration_data()));
  RETURN_IF_ERROR(CheckData("evaluation_data", recipe.evaluation_data()));
  RETURN_IF_ERROR(CheckQuantization(recipe.quantization()));
  RETURN_IF_ERROR(CheckDevice(recipe.device()));
  if (recipe.num_threads() < 0) return absl::InvalidArgumentError("num_threads must be >= 0");
  return absl::OkStatus();
}

std::string StepName(const v1::Step& step) {
  const auto* field = step.GetReflection()->GetOneofFieldDescriptor(
      step, step.GetDescriptor()->FindOneofByName("kind"));
  return field == nullptr ? "" : field->name();
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
