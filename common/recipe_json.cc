#include "recipe_json.h"

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

}  // namespace qopt
