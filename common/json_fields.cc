#include "json_fields.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "status.h"

namespace qopt {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::OneofDescriptor;
using Json = nlohmann::ordered_json;

std::string Child(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(path.empty() ? what : absl::StrCat(path, ": ", what));
}

// The rejected value as the error shows it: a scalar as JSON (escaped to ASCII, so cutting
// it short never splits a character), a container by its kind.
std::string Shown(const Json& value) {
  if (value.is_object()) return "an object";
  if (value.is_array()) return "a list";
  constexpr size_t kMaxChars = 40;
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/true);
  if (text.size() > kMaxChars) text = absl::StrCat(text.substr(0, kMaxChars), "...");
  return text;
}

absl::Status Expected(const std::string& path, const char* kind, const Json& value) {
  return Invalid(path, absl::StrCat("expected ", kind, ", got ", Shown(value)));
}

// Numbers in strings are what YAML recipes hold (every YAML scalar arrives as a string);
// protobuf's JSON mapping reads them without surrounding blanks.
bool IsBareText(const std::string& text) {
  return !text.empty() && !absl::ascii_isspace(text.front()) && !absl::ascii_isspace(text.back());
}

// A JSON integer, a number without a fraction (1e3), or a string of decimal digits.
template <typename Int>
bool IsInteger(const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>() <= std::numeric_limits<Int>::max();
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    return v >= 0 ? static_cast<uint64_t>(v) <= std::numeric_limits<Int>::max()
                  : v >= static_cast<int64_t>(std::numeric_limits<Int>::min());
  }
  if (value.is_number_float()) {
    const double v = value.get<double>();
    const double limit = std::ldexp(1.0, std::numeric_limits<Int>::digits);  // 2^31, 2^63, 2^32, 2^64
    return std::trunc(v) == v && v >= static_cast<double>(std::numeric_limits<Int>::min()) && v < limit;
  }
  Int parsed;
  return value.is_string() && IsBareText(value.get_ref<const std::string&>()) &&
         absl::SimpleAtoi(value.get_ref<const std::string&>(), &parsed);
}

// A JSON number, or a string holding a finite decimal (or hex) number, "NaN",
// "Infinity" or "-Infinity", as protobuf's JSON mapping reads them.
bool IsReal(const Json& value, double max_magnitude) {
  if (value.is_number()) return std::abs(value.get<double>()) <= max_magnitude;
  if (!value.is_string()) return false;
  const std::string& text = value.get_ref<const std::string&>();
  if (text == "NaN" || text == "Infinity" || text == "-Infinity") return true;
  if (!IsBareText(text)) return false;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && std::isfinite(v) && std::abs(v) <= max_magnitude;
}

absl::Status CheckMessage(const Json& value, const Descriptor& type, const std::string& path);

// One value of `field` (an element, when the field is repeated).
absl::Status CheckValue(const Json& value, const FieldDescriptor& field, const std::string& path) {
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return IsInteger<int32_t>(value) ? absl::OkStatus() : Expected(path, "a 32-bit integer", value);
    case FieldDescriptor::CPPTYPE_INT64:
      return IsInteger<int64_t>(value) ? absl::OkStatus() : Expected(path, "a 64-bit integer", value);
    case FieldDescriptor::CPPTYPE_UINT32:
      return IsInteger<uint32_t>(value) ? absl::OkStatus() : Expected(path, "an unsigned 32-bit integer", value);
    case FieldDescriptor::CPPTYPE_UINT64:
      return IsInteger<uint64_t>(value) ? absl::OkStatus() : Expected(path, "an unsigned 64-bit integer", value);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return IsReal(value, std::numeric_limits<double>::max()) ? absl::OkStatus() : Expected(path, "a number", value);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return IsReal(value, std::numeric_limits<float>::max()) ? absl::OkStatus() : Expected(path, "a number", value);
    case FieldDescriptor::CPPTYPE_BOOL: {
      const bool ok = value.is_boolean() || value == "true" || value == "false";
      return ok ? absl::OkStatus() : Expected(path, "true or false", value);
    }
    case FieldDescriptor::CPPTYPE_STRING:
      return value.is_string() ? absl::OkStatus() : Expected(path, "a string", value);
    case FieldDescriptor::CPPTYPE_ENUM:
      return value.is_string() || value.is_number_integer() ? absl::OkStatus()
                                                             : Expected(path, "a name or a number", value);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      // Well-known types (Struct, Duration, ...) have JSON forms of their own; protobuf
      // checks those.
      if (absl::StartsWith(field.message_type()->full_name(), "google.protobuf.")) return absl::OkStatus();
      return CheckMessage(value, *field.message_type(), path);
  }
  return absl::OkStatus();
}

absl::Status CheckField(const Json& value, const FieldDescriptor& field, const std::string& path) {
  if (field.is_map()) {
    if (!value.is_object()) return Expected(path, "an object", value);
    for (const auto& [key, item] : value.items()) {
      RETURN_IF_ERROR(CheckValue(item, *field.message_type()->map_value(), absl::StrCat(path, "[", Shown(key), "]")));
    }
    return absl::OkStatus();
  }
  if (field.is_repeated()) {
    if (!value.is_array()) return Expected(path, "a list", value);
    for (size_t i = 0; i < value.size(); ++i) {
      RETURN_IF_ERROR(CheckValue(value[i], field, absl::StrCat(path, "[", i, "]")));
    }
    return absl::OkStatus();
  }
  return CheckValue(value, field, path);
}

// By proto name or JSON name, as protobuf's JSON parser finds it.
const FieldDescriptor* FindField(const Descriptor& type, const std::string& key) {
  if (const FieldDescriptor* field = type.FindFieldByName(key)) return field;
  for (int i = 0; i < type.field_count(); ++i) {
    if (type.field(i)->json_name() == key) return type.field(i);
  }
  return nullptr;
}

std::string FieldNames(const Descriptor& type) {
  std::string names;
  for (int i = 0; i < type.field_count(); ++i) absl::StrAppend(&names, i == 0 ? "" : ", ", type.field(i)->name());
  return names;
}

absl::Status CheckMessage(const Json& value, const Descriptor& type, const std::string& path) {
  if (!value.is_object()) return Expected(path, "an object", value);
  std::map<const OneofDescriptor*, const FieldDescriptor*> chosen;  // oneof -> the member set
  for (const auto& [key, item] : value.items()) {
    const FieldDescriptor* field = FindField(type, key);
    if (field == nullptr) {
      return Invalid(path, absl::StrCat("unknown field ", Shown(key), "; allowed: ", FieldNames(type)));
    }
    if (item.is_null()) continue;  // the field stays unset
    if (const OneofDescriptor* oneof = field->real_containing_oneof()) {
      const auto [it, fresh] = chosen.emplace(oneof, field);
      if (!fresh) {
        return Invalid(path, absl::StrCat(it->second->name(), " and ", field->name(), " are alternatives; set one"));
      }
    }
    RETURN_IF_ERROR(CheckField(item, *field, Child(path, field->name())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckJsonFields(const nlohmann::ordered_json& json, const Descriptor& type) {
  return CheckMessage(json, type, "");
}

}  // namespace qopt
