#include "yaml_json.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"

namespace qopt::cli {
namespace {

// Ordered, so that the recipe check meets a YAML recipe's fields in the order written, as
// it does a JSON recipe's, and reports the same first problem.
nlohmann::ordered_json Convert(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::ordered_json object = nlohmann::ordered_json::object();
      for (const auto& kv : node) object[kv.first.as<std::string>()] = Convert(kv.second);
      return object;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::ordered_json array = nlohmann::ordered_json::array();
      for (const auto& item : node) array.push_back(Convert(item));
      return array;
    }
    case YAML::NodeType::Scalar: {
      const std::string text = node.Scalar();
      const bool quoted = node.Tag() == "!";
      if (!quoted && (text == "true" || text == "false")) return text == "true";
      return text;
    }
    default:
      return nullptr;
  }
}

}  // namespace

absl::StatusOr<std::string> YamlToJson(const std::string& yaml_text) {
  try {
    return Convert(YAML::Load(yaml_text)).dump();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", e.what()));
  } catch (const nlohmann::json::exception& e) {
    // YAML takes any bytes in a scalar; JSON text (and a recipe) must be UTF-8.
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: not UTF-8 text: ", e.what()));
  }
}

}  // namespace qopt::cli
