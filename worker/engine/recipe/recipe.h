// Recipes (job specs): reading from JSON and validation before anything runs.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "qopt/v1/recipe.pb.h"
#include "quant/quantsim.h"
#include "recipe_json.h"  // ParseRecipeJson

namespace qopt {

/// Reads a recipe file; relative paths inside it are taken from the file's folder.
absl::StatusOr<v1::Recipe> LoadRecipeFile(const std::string& path);

/// Makes every relative file path of `recipe` relative to `base_dir`.
void ResolveRelativePaths(const std::string& base_dir, v1::Recipe* recipe);

/// Checks a recipe before it runs (bitwidths, calibration methods, data, step order) and
/// returns the QuantSim options it implies, so the config file is read once.
absl::StatusOr<QuantSimOptions> ValidateRecipe(const v1::Recipe& recipe);

/// QuantSim options from the recipe's quantization settings (config file loaded).
absl::StatusOr<QuantSimOptions> QuantSimOptionsFromRecipe(const v1::Recipe& recipe);

}  // namespace qopt
