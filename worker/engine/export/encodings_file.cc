#include "export/encodings_file.h"

#include <cmath>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "status.h"

namespace qopt {
namespace internal_encodings {

using json = nlohmann::ordered_json;

// An integer field; AIMET writes integers, but a float with an integral value in range is
// read as that integer. JSON numbers outside [lo, hi] are errors, not casts.
absl::StatusOr<int64_t> IntegerField(const json& j, const char* key, int64_t lo, int64_t hi,
                                     const std::string& where) {
  const json& v = j[key];
  const auto out_of_range = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": '", key, "' must be an integer in [", lo, ", ", hi, "], got ", v.dump()));
  };
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return out_of_range();
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi) return out_of_range();
    return i;
  }
  const double d = v.get<double>();
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) || d != std::trunc(d)) {
    return out_of_range();
  }
  return static_cast<int64_t>(d);
}

absl::StatusOr<Encoding> FromJson(const json& j, const std::string& where) {
  for (const char* key : {"bitwidth", "scale", "offset"}) {
    if (!j.contains(key) || !j[key].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": missing number '", key, "'"));
    }
  }
  if (j.contains("dtype") && j["dtype"] != "int") {
    return absl::UnimplementedError(absl::StrCat(where, ": dtype ", j["dtype"].dump(),
                                                 " is not supported (only int)"));
  }
  bool symmetric = false;
  if (j.contains("is_symmetric")) {
    const json& s = j["is_symmetric"];
    symmetric = s.is_boolean() ? s.get<bool>() : (s.is_string() && s.get<std::string>() == "True");
  }
  // Wide enough for any message EncodingFromScaleOffset gives about the values.
  ASSIGN_OR_RETURN(const int64_t bitwidth, IntegerField(j, "bitwidth", 0, 64, where));
  ASSIGN_OR_RETURN(const int64_t offset, IntegerField(j, "offset", -(int64_t{1} << 32), int64_t{1} << 32, where));
  auto e = EncodingFromScaleOffset(static_cast<int>(bitwidth), symmetric, j["scale"].get<double>(), offset);
  if (!e.ok()) return Annotate(e.status(), where);
  return e;
}

}  // namespace internal_encodings

absl::StatusOr<EncodingsFile> ParseEncodingsJson(const std::string& json_text) {
  using namespace internal_encodings;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("encodings file is not valid JSON: ", e.what()));
  }
  if (!j.is_object() || !j.contains("param_encodings") || !j.contains("activation_encodings")) {
    return absl::InvalidArgumentError(
        "encodings file lacks 'param_encodings' / 'activation_encodings' (AIMET format)");
  }
  EncodingsFile file;
  for (const auto& [name, list] : j["param_encodings"].items()) {
    const json entries = list.is_array() ? list : json::array({list});
    if (entries.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("param_encodings.", name, ": empty list"));
    }
    std::vector<Encoding> encodings;
    for (const auto& entry : entries) {
      ASSIGN_OR_RETURN(Encoding e, FromJson(entry, "param_encodings." + name));
      encodings.push_back(e);
    }
    file.params.emplace_back(name, std::move(encodings));
  }
  for (const auto& [layer, sides] : j["activation_encodings"].items()) {
    for (const char* side : {"input", "output"}) {
      if (!sides.contains(side)) continue;
      for (const auto& [index, entry] : sides[side].items()) {
        ActivationEncodingEntry a{layer, std::string(side) == "input", 0, {}};
        if (!absl::SimpleAtoi(index, &a.index)) {
          return absl::InvalidArgumentError(
              absl::StrCat("activation_encodings.", layer, ".", side, ": bad index '", index, "'"));
        }
        if (entry.is_array() && entry.empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("activation_encodings.", layer, ".", side, ".", index, ": empty list"));
        }
        const json& e_json = entry.is_array() ? entry.front() : entry;
        ASSIGN_OR_RETURN(a.encoding, FromJson(e_json, absl::StrCat("activation_encodings.", layer)));
        file.activations.push_back(std::move(a));
      }
    }
  }
  return file;
}

}  // namespace qopt
