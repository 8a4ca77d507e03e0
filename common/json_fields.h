// JSON checked against a protobuf message type before protobuf's JSON parser reads it, so
// that a misspelled or mistyped field is reported as the recipe writes it: its path in
// proto (snake_case) names and, for an unknown name, the names allowed there. YAML recipes
// become JSON before this check, so both spellings get the same message.
#pragma once

#include <nlohmann/json.hpp>
#include <google/protobuf/descriptor.h>

#include "absl/status/status.h"

namespace qopt {

/// OK when every key of `json`, at every depth, names a field of the message type there
/// (its proto name or its lowerCamel JSON name, as protobuf's JSON mapping accepts) and
/// every value is of a kind the field can hold (numbers may be written as strings, as the
/// mapping allows; null leaves a field unset). Otherwise InvalidArgument for the first
/// problem in document order, e.g.
///   steps[2].adaround: unknown field "iterations"; allowed: num_iterations, num_batches, ...
///   steps[0].calibrate.num_batches: expected a 32-bit integer, got "all"
/// Value ranges beyond the field's type are left to the recipe checks.
[[nodiscard]] absl::Status CheckJsonFields(const nlohmann::ordered_json& json, const google::protobuf::Descriptor& type);

}  // namespace qopt
