// The files a recipe names, found by protobuf reflection: every string field marked
// `[(qopt.v1.file) = true]` in recipe.proto. The CLI and the Python client upload them,
// the server checks their blobs, the worker fetches them and the offline runner resolves
// them against the recipe's folder, all from that one declaration.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

struct RecipeFile {
  std::string field;  // where it sits in the recipe: "calibration_data.labels_path"
  std::string value;  // a local path or a blob's sha256
};

/// The recipe's non-empty file fields, in declaration order. Only sub-messages that are
/// set are visited.
std::vector<RecipeFile> RecipeFiles(const v1::Recipe& recipe);

/// Calls `edit` on each non-empty file field (as RecipeFiles lists them) and stores the
/// value it leaves; stops at, and returns, the first error. Never adds a sub-message, so
/// the recipe's meaning stays.
absl::Status EditRecipeFiles(
    v1::Recipe* recipe, const std::function<absl::Status(const std::string& field, std::string* value)>& edit);

/// Every data set the recipe names, with where it sits ("calibration_data",
/// "steps[3].qat.data"), in field-number order; only DataRefs that are set. The pointers
/// point into `recipe`.
std::vector<std::pair<std::string, const v1::DataRef*>> RecipeDataRefs(const v1::Recipe& recipe);

}  // namespace qopt
