#include "recipe/recipe.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "recipe_check.h"
#include "recipe_files.h"
#include "status.h"

namespace qopt {

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
  (void)EditRecipeFiles(recipe, [&](const std::string&, std::string* p) {
    if (!std::filesystem::path(*p).is_absolute()) {
      *p = (std::filesystem::path(base_dir) / *p).lexically_normal().string();
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<QuantSimOptions> ValidateRecipe(const v1::Recipe& recipe) {
  if (recipe.model().path().empty()) {
    return absl::InvalidArgumentError("recipe names no model (model.path or --model)");
  }
  RETURN_IF_ERROR(CheckRecipe(recipe));
  ASSIGN_OR_RETURN(QuantSimOptions options, QuantSimOptionsFromRecipe(recipe));
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
  if (q.kernels() == "onnxruntime_int8") {
    o.kernels = QuantSimOptions::Kernels::kOnnxRuntimeInt8;
  } else if (!q.kernels().empty() && q.kernels() != "fake_quant") {
    return absl::InvalidArgumentError(absl::StrCat("quantization.kernels: unknown kernels '", q.kernels(),
                                                   "' (fake_quant or onnxruntime_int8)"));
  }
  RETURN_IF_ERROR(Annotate(o.Validate(), "quantization"));
  return o;
}

}  // namespace qopt
