#include "recipe/recipe.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "status.h"

namespace qopt {

absl::StatusOr<v1::Recipe> ParseRecipeJson(const std::string& json_text) {
  v1::Recipe recipe;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(json_text, &recipe, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid recipe: ", FirstLine(status.message().as_string())));
  }
  return recipe;
}

absl::StatusOr<v1::Recipe> LoadRecipeFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("recipe file not found: ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto recipe = ParseRecipeJson(ss.str());
  if (!recipe.ok()) return Annotate(recipe.status(), path);
  ResolveRelativePaths(std::filesystem::path(path).parent_path().string(), &*recipe);
  return recipe;
}

void ResolveRelativePaths(const std::string& base_dir, v1::Recipe* recipe) {
  auto resolve = [&](std::string* p) {
    if (p->empty() || std::filesystem::path(*p).is_absolute()) return;
    *p = (std::filesystem::path(base_dir) / *p).lexically_normal().string();
  };
  resolve(recipe->mutable_model()->mutable_path());
  for (v1::DataRef* d : {recipe->mutable_calibration_data(), recipe->mutable_evaluation_data()}) {
    resolve(d->mutable_path());
    resolve(d->mutable_labels_path());
  }
  resolve(recipe->mutable_quantization()->mutable_config_path());
  resolve(recipe->mutable_quantization()->mutable_freeze_encodings_path());
}

absl::StatusOr<QuantSimOptions> ValidateRecipe(const v1::Recipe& recipe) {
  if (recipe.model().path().empty()) {
    return absl::InvalidArgumentError("recipe names no model (model.path or --model)");
  }
  if (recipe.steps().empty()) return absl::InvalidArgumentError("recipe has no steps");
  ASSIGN_OR_RETURN(QuantSimOptions options, QuantSimOptionsFromRecipe(recipe));

  bool calibrated = false;
  bool needs_data = false;
  for (int i = 0; i < recipe.steps_size(); ++i) {
    const v1::Step& step = recipe.steps(i);
    const std::string where = absl::StrCat("steps[", i, "]");
    switch (step.kind_case()) {
      case v1::Step::kFoldBatchNorm:
        if (calibrated) {
          return absl::InvalidArgumentError(
              where + ": fold_batch_norm must come before calibrate");
        }
        break;
      case v1::Step::kCalibrate:
        if (step.calibrate().num_batches() < 0) {
          return absl::InvalidArgumentError(where + ": calibrate.num_batches must be >= 0");
        }
        calibrated = true;
        needs_data = true;
        break;
      case v1::Step::kEvaluate:
        needs_data = true;
        if (!calibrated) {
          return absl::InvalidArgumentError(where + ": evaluate needs a calibrate step before it");
        }
        break;
      case v1::Step::kExport:
        break;
      case v1::Step::KIND_NOT_SET:
        return absl::InvalidArgumentError(where + ": step names no operation");
    }
  }
  if (needs_data && recipe.calibration_data().path().empty()) {
    return absl::InvalidArgumentError(
        "recipe needs calibration data: set calibration_data.path or pass --data");
  }
  for (const v1::DataRef* ref : {&recipe.calibration_data(), &recipe.evaluation_data()}) {
    const v1::Preprocess& p = ref->preprocess();
    if (p.resize() < 0 || p.center_crop() < 0 || (p.channels() != 0 && p.channels() != 1 && p.channels() != 3)) {
      return absl::InvalidArgumentError(
          "preprocess: resize and center_crop must be >= 0, channels 0, 1 or 3");
    }
  }
  if (recipe.calibration_data().batch_size() < 0 || recipe.calibration_data().max_samples() < 0) {
    return absl::InvalidArgumentError("calibration_data: batch_size and max_samples must be >= 0");
  }
  return options;
}

absl::StatusOr<QuantSimOptions> QuantSimOptionsFromRecipe(const v1::Recipe& recipe) {
  const v1::QuantizationSettings& q = recipe.quantization();
  QuantSimOptions o;
  if (q.param_bitwidth() != 0) o.param_bitwidth = q.param_bitwidth();
  if (q.activation_bitwidth() != 0) o.activation_bitwidth = q.activation_bitwidth();
  o.per_channel = q.per_channel();
  if (!q.param_calibration().empty()) {
    auto m = ParseCalibrationMethod(q.param_calibration());
    if (!m.ok()) return Annotate(m.status(), "quantization.param_calibration");
    o.param_method = *m;
  }
  if (!q.activation_calibration().empty()) {
    auto m = ParseCalibrationMethod(q.activation_calibration());
    if (!m.ok()) return Annotate(m.status(), "quantization.activation_calibration");
    o.activation_method = *m;
  }
  if (q.percentile() != 0.0) o.percentile = q.percentile();
  if (!q.config_path().empty()) {
    ASSIGN_OR_RETURN(o.config, LoadQuantSimConfig(q.config_path()));
  }
  o.exclude_layers.assign(q.exclude_layers().begin(), q.exclude_layers().end());
  RETURN_IF_ERROR(Annotate(o.Validate(), "quantization"));
  return o;
}

}  // namespace qopt
