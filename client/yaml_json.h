// Recipes may be written in YAML: the YAML is turned into JSON and then read with
// protobuf's JSON mapping, so both spellings of a recipe mean the same message.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace qopt::cli {

/// Converts YAML text to JSON text. Scalars become strings (protobuf's JSON mapping reads
/// numbers from strings too), except unquoted true / false, which stay booleans.
[[nodiscard]] absl::StatusOr<std::string> YamlToJson(const std::string& yaml_text);

}  // namespace qopt::cli
