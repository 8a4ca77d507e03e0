// A recipe as JSON text, through what qopt-server and the engine run before anything
// else: protobuf's JSON mapping, the step checks, the technique name and the file fields.
#include <cstddef>
#include <cstdint>
#include <string>

#include "recipe_check.h"
#include "recipe_files.h"
#include "recipe_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<qopt::v1::Recipe> recipe = qopt::ParseRecipeJson(text);
  if (!recipe.ok()) return 0;
  if (qopt::CheckRecipe(*recipe).ok()) (void)qopt::RecipeTechnique(*recipe);
  (void)qopt::EditRecipeFiles(&*recipe, [](const std::string&, std::string* path) {
    path->append("/x");
    return absl::OkStatus();
  });
  return 0;
}
