// Recipes as JSON text (protobuf's JSON mapping). Torch-free, so the engine, the server
// side and the fuzz harnesses read a recipe with the same code.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

/// Parses a recipe from JSON (field names in snake_case or lowerCamel). InvalidArgument
/// "invalid recipe: ..." naming the field by its path in snake_case for an unknown field
/// (with the names allowed there) or a value of the wrong kind (see CheckJsonFields), or
/// with the first line of protobuf's message for text that is not JSON.
[[nodiscard]] absl::StatusOr<v1::Recipe> ParseRecipeJson(const std::string& json_text);

}  // namespace qopt
