#include "recipe_json.h"

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "json_fields.h"
#include "status.h"

namespace qopt {

absl::StatusOr<v1::Recipe> ParseRecipeJson(const std::string& json_text) {
  // Field names and value kinds first, so that errors name fields as the recipe writes
  // them; text that is not JSON at all gets protobuf's syntax error below.
  const auto json = nlohmann::ordered_json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_discarded()) {
    if (absl::Status fields = CheckJsonFields(json, *v1::Recipe::descriptor()); !fields.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("invalid recipe: ", fields.message()));
    }
  }
  v1::Recipe recipe;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(json_text, &recipe, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid recipe: ", FirstLine(status.message().as_string())));
  }
  return recipe;
}

}  // namespace qopt
