// Recipes as JSON text (protobuf's JSON mapping). Torch-free, so the engine, the server
// side and the fuzz harnesses read a recipe with the same code.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

/// Parses a recipe from JSON; unknown fields are errors. InvalidArgument with the first
/// line of protobuf's message ("invalid recipe: ...").
[[nodiscard]] absl::StatusOr<v1::Recipe> ParseRecipeJson(const std::string& json_text);

}  // namespace qopt
