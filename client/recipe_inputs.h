// Turns a recipe file written for the offline runner into one the service accepts: local
// input files are uploaded and named by their sha256.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "connection.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt::cli {

/// Paths given on the command line; they replace the recipe's and are relative to the
/// working directory. Empty = keep the recipe's.
struct RecipeOverrides {
  std::string model;        // model.path
  std::string data;         // calibration_data.path
  std::string eval_data;    // evaluation_data.path
  std::string eval_labels;  // evaluation_data.labels_path
};

/// Reads a recipe file, JSON or YAML (.yaml / .yml), with ParseRecipeJson: unknown fields
/// are errors that name the fields allowed there (docs/recipe.md lists them). Relative
/// input paths in the file are made relative to the file's folder, so a recipe works from
/// any working directory, as it does offline. Fails with a usage error.
[[nodiscard]] absl::StatusOr<v1::Recipe> LoadRecipe(const std::string& path,
                                                    const RecipeOverrides& overrides);

/// For model.path, calibration_data.path / labels_path and evaluation_data.path /
/// labels_path: uploads a path that names a local file and replaces it with the blob's
/// sha256; keeps a path that already is a sha256. Anything else (a missing file, a folder)
/// is a usage error, found before the job is submitted.
[[nodiscard]] absl::Status UploadRecipeInputs(Connection& connection, v1::Recipe* recipe);

}  // namespace qopt::cli
