// A recipe written in YAML, as the CLI reads it: YAML -> JSON -> recipe -> checks.
#include <cstddef>
#include <cstdint>
#include <string>

#include "recipe_check.h"
#include "recipe_json.h"
#include "yaml_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::string> json = qopt::cli::YamlToJson(text);
  if (!json.ok()) return 0;
  absl::StatusOr<qopt::v1::Recipe> recipe = qopt::ParseRecipeJson(*json);
  if (recipe.ok()) (void)qopt::CheckRecipe(*recipe);
  return 0;
}
