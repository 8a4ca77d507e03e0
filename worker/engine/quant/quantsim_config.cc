#include "quant/quantsim_config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "status.h"

namespace qopt {
namespace internal_config {

using json = nlohmann::json;

absl::Status CheckKeys(const json& j, const std::string& where,
                       const std::set<std::string>& allowed) {
  if (!j.is_object()) return absl::InvalidArgumentError(where + ": expected an object");
  for (const auto& [key, _] : j.items()) {
    if (!allowed.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", key,
                                                     "' (allowed: ", absl::StrJoin(allowed, ", "),
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<bool>> Bool(const json& j, const std::string& key,
                                         const std::string& where) {
  if (!j.contains(key)) return std::optional<bool>();
  const json& v = j[key];
  if (v.is_boolean()) return std::optional<bool>(v.get<bool>());
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "True" || s == "true") return std::optional<bool>(true);
    if (s == "False" || s == "false") return std::optional<bool>(false);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".", key, ": expected true/false or \"True\"/\"False\", got ",
                   v.dump()));
}

absl::StatusOr<std::optional<int>> Bitwidth(const json& j, const std::string& where) {
  if (!j.contains("bitwidth")) return std::optional<int>();
  const json& v = j["bitwidth"];
  if (!v.is_number_integer() || v.get<int64_t>() < 2 || v.get<int64_t>() > 16) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".bitwidth: expected an integer in 2..16, got ", v.dump()));
  }
  return std::optional<int>(v.get<int>());
}

absl::StatusOr<ParamRule> ParseParamRule(const json& j, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(j, where, {"is_quantized", "is_symmetric", "bitwidth"}));
  ParamRule r;
  ASSIGN_OR_RETURN(r.is_quantized, Bool(j, "is_quantized", where));
  ASSIGN_OR_RETURN(r.is_symmetric, Bool(j, "is_symmetric", where));
  ASSIGN_OR_RETURN(r.bitwidth, Bitwidth(j, where));
  return r;
}

absl::StatusOr<std::map<std::string, ParamRule>> ParseParamMap(const json& j,
                                                               const std::string& where) {
  if (!j.is_object()) return absl::InvalidArgumentError(where + ": expected an object");
  std::map<std::string, ParamRule> out;
  for (const auto& [name, rule] : j.items()) {
    ASSIGN_OR_RETURN(out[name], ParseParamRule(rule, where + "." + name));
  }
  return out;
}

absl::StatusOr<std::vector<SupportedKernel>> ParseKernels(const json& j, const std::string& where) {
  if (!j.is_array()) return absl::InvalidArgumentError(where + ": expected a list");
  std::vector<SupportedKernel> kernels;
  for (size_t k = 0; k < j.size(); ++k) {
    const std::string at = absl::StrCat(where, "[", k, "]");
    RETURN_IF_ERROR(CheckKeys(j[k], at, {"activation", "param"}));
    SupportedKernel kernel;
    for (const char* side : {"activation", "param"}) {
      const std::string here = absl::StrCat(at, ".", side);
      if (!j[k].contains(side)) return absl::InvalidArgumentError(here + ": missing");
      const json& e = j[k][side];
      RETURN_IF_ERROR(CheckKeys(e, here, {"bitwidth", "dtype"}));
      ASSIGN_OR_RETURN(const std::optional<int> bits, Bitwidth(e, here));
      if (!bits) return absl::InvalidArgumentError(here + ".bitwidth: missing");
      std::string dtype = "int";
      if (e.contains("dtype")) {
        if (!e["dtype"].is_string() || (e["dtype"] != "int" && e["dtype"] != "float")) {
          return absl::InvalidArgumentError(absl::StrCat(here, ".dtype: expected \"int\" or \"float\", got ", e["dtype"].dump()));
        }
        dtype = e["dtype"].get<std::string>();
      }
      (std::string(side) == "activation" ? kernel.activation_bits : kernel.param_bits) = *bits;
      (std::string(side) == "activation" ? kernel.activation_dtype : kernel.param_dtype) = dtype;
    }
    kernels.push_back(kernel);
  }
  return kernels;
}

absl::StatusOr<std::pair<double, double>> ParseConstraints(const json& j, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(j, where, {"min", "max"}));
  if (!j.contains("min") || !j.contains("max") || !j["min"].is_number() || !j["max"].is_number() ||
      !(j["min"].get<double>() < j["max"].get<double>())) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected numbers min < max, got ", j.dump()));
  }
  return std::pair{j["min"].get<double>(), j["max"].get<double>()};
}

json KernelsJson(const std::vector<SupportedKernel>& kernels) {
  json list = json::array();
  for (const SupportedKernel& k : kernels) {
    list.push_back({{"activation", {{"bitwidth", k.activation_bits}, {"dtype", k.activation_dtype}}},
                    {"param", {{"bitwidth", k.param_bits}, {"dtype", k.param_dtype}}}});
  }
  return list;
}

absl::StatusOr<OpRule> ParseOpRule(const json& j, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(j, where,
                            {"is_input_quantized", "is_output_quantized", "is_symmetric",
                             "per_channel_quantization", "params", "supported_kernels",
                             "encoding_constraints", "bitwidth"}));
  OpRule r;
  ASSIGN_OR_RETURN(r.bitwidth, Bitwidth(j, where));
  ASSIGN_OR_RETURN(r.is_input_quantized, Bool(j, "is_input_quantized", where));
  ASSIGN_OR_RETURN(r.is_output_quantized, Bool(j, "is_output_quantized", where));
  ASSIGN_OR_RETURN(r.is_symmetric, Bool(j, "is_symmetric", where));
  ASSIGN_OR_RETURN(r.per_channel_quantization, Bool(j, "per_channel_quantization", where));
  if (j.contains("params")) {
    ASSIGN_OR_RETURN(r.params, ParseParamMap(j["params"], where + ".params"));
  }
  if (j.contains("encoding_constraints")) {
    ASSIGN_OR_RETURN(r.encoding_constraints, ParseConstraints(j["encoding_constraints"], where + ".encoding_constraints"));
  }
  if (j.contains("supported_kernels")) {
    ASSIGN_OR_RETURN(r.supported_kernels, ParseKernels(j["supported_kernels"], where + ".supported_kernels"));
  }
  return r;
}

void PutBool(json& j, const char* key, const std::optional<bool>& b) {
  if (b) j[key] = *b;
}

json ParamRuleJson(const ParamRule& r) {
  json j = json::object();
  PutBool(j, "is_quantized", r.is_quantized);
  PutBool(j, "is_symmetric", r.is_symmetric);
  if (r.bitwidth) j["bitwidth"] = *r.bitwidth;
  return j;
}

json ParamMapJson(const std::map<std::string, ParamRule>& rules) {
  json j = json::object();
  for (const auto& [name, rule] : rules) j[name] = ParamRuleJson(rule);
  return j;
}

json OpRuleJson(const OpRule& r) {
  json j = json::object();
  PutBool(j, "is_input_quantized", r.is_input_quantized);
  PutBool(j, "is_output_quantized", r.is_output_quantized);
  PutBool(j, "is_symmetric", r.is_symmetric);
  PutBool(j, "per_channel_quantization", r.per_channel_quantization);
  if (r.bitwidth) j["bitwidth"] = *r.bitwidth;
  if (!r.params.empty()) j["params"] = ParamMapJson(r.params);
  if (r.encoding_constraints) {
    j["encoding_constraints"] = {{"min", r.encoding_constraints->first}, {"max", r.encoding_constraints->second}};
  }
  if (!r.supported_kernels.empty()) j["supported_kernels"] = KernelsJson(r.supported_kernels);
  return j;
}

}  // namespace internal_config

std::string QuantSimConfigToJson(const QuantSimConfig& c) {
  using namespace internal_config;
  json j = json::object();
  json defaults = json::object();
  defaults["ops"] = OpRuleJson(c.default_ops);
  defaults["params"] = ParamRuleJson(c.default_params);
  PutBool(defaults, "strict_symmetric", c.strict_symmetric);
  PutBool(defaults, "unsigned_symmetric", c.unsigned_symmetric);
  PutBool(defaults, "per_channel_quantization", c.per_channel_quantization);
  if (!c.supported_kernels.empty()) defaults["supported_kernels"] = KernelsJson(c.supported_kernels);
  if (c.hw_version) defaults["hw_version"] = *c.hw_version;
  j["defaults"] = std::move(defaults);
  j["params"] = ParamMapJson(c.params);
  json ops = json::object();
  for (const auto& [type, rule] : c.op_types) ops[type] = OpRuleJson(rule);
  j["op_type"] = std::move(ops);
  json groups = json::array();
  for (const auto& g : c.supergroups) groups.push_back({{"op_list", g}});
  j["supergroups"] = std::move(groups);
  j["model_input"] = {{"is_input_quantized", c.model_input_quantized}};
  if (c.model_input_bitwidth) j["model_input"]["bitwidth"] = *c.model_input_bitwidth;
  j["model_output"] = {{"is_output_quantized", c.model_output_quantized}};
  json layers = json::object();
  for (const auto& [name, rule] : c.layers) layers[name] = OpRuleJson(rule);
  if (!layers.empty()) j["layers"] = std::move(layers);
  return j.dump(2) + "\n";
}

std::string SupportedKernel::Name() const {
  const bool is_float = activation_dtype != "int" || param_dtype != "int";
  return absl::StrCat("W", param_bits, "A", activation_bits, is_float ? " (float)" : "");
}

bool SupportedKernel::Runs(std::optional<int> activation, std::optional<int> param) const {
  return activation_dtype == "int" && param_dtype == "int" && (!activation || *activation == activation_bits) &&
         (!param || *param == param_bits);
}

QuantSimConfig QuantSimConfig::Default() {
  QuantSimConfig c;
  c.default_ops.is_output_quantized = true;
  c.default_ops.is_symmetric = false;
  c.default_params.is_quantized = true;
  c.default_params.is_symmetric = true;
  c.strict_symmetric = false;
  c.unsigned_symmetric = true;
  c.params["bias"].is_quantized = false;
  c.supergroups = {{"Conv", "Relu"},           {"Conv", "Clip"},
                   {"Conv", "BatchNormalization", "Relu"},
                   {"Conv", "BatchNormalization", "Clip"},
                   {"Conv", "BatchNormalization"},
                   {"ConvTranspose", "Relu"},  {"Gemm", "Relu"},
                   {"Add", "Relu"}};
  return c;
}

absl::StatusOr<QuantSimConfig> ParseQuantSimConfig(const std::string& json_text) {
  using namespace internal_config;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("quantsim config is not valid JSON: ",
                                                   e.what()));
  }
  RETURN_IF_ERROR(CheckKeys(j, "config",
                            {"defaults", "params", "op_type", "supergroups", "model_input",
                             "model_output", "layers"}));
  QuantSimConfig c;
  if (j.contains("defaults")) {
    const json& d = j["defaults"];
    RETURN_IF_ERROR(CheckKeys(d, "defaults",
                              {"ops", "params", "strict_symmetric", "unsigned_symmetric",
                               "per_channel_quantization", "hw_version", "supported_kernels"}));
    if (d.contains("ops")) {
      ASSIGN_OR_RETURN(c.default_ops, ParseOpRule(d["ops"], "defaults.ops"));
    }
    if (d.contains("params")) {
      ASSIGN_OR_RETURN(c.default_params, ParseParamRule(d["params"], "defaults.params"));
    }
    ASSIGN_OR_RETURN(c.strict_symmetric, Bool(d, "strict_symmetric", "defaults"));
    ASSIGN_OR_RETURN(c.unsigned_symmetric, Bool(d, "unsigned_symmetric", "defaults"));
    ASSIGN_OR_RETURN(c.per_channel_quantization,
                     Bool(d, "per_channel_quantization", "defaults"));
    if (d.contains("supported_kernels")) {
      ASSIGN_OR_RETURN(c.supported_kernels, ParseKernels(d["supported_kernels"], "defaults.supported_kernels"));
    }
    if (d.contains("hw_version")) {
      if (!d["hw_version"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("defaults.hw_version: expected a string, got ", d["hw_version"].dump()));
      }
      c.hw_version = d["hw_version"].get<std::string>();
    }
  }
  if (j.contains("params")) {
    ASSIGN_OR_RETURN(c.params, ParseParamMap(j["params"], "params"));
  }
  for (const char* section : {"op_type", "layers"}) {
    if (!j.contains(section)) continue;
    if (!j[section].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(section, ": expected an object"));
    }
    auto& target = std::string(section) == "op_type" ? c.op_types : c.layers;
    for (const auto& [name, rule] : j[section].items()) {
      ASSIGN_OR_RETURN(target[name], ParseOpRule(rule, absl::StrCat(section, ".", name)));
    }
  }
  if (j.contains("supergroups")) {
    if (!j["supergroups"].is_array()) {
      return absl::InvalidArgumentError("supergroups: expected a list");
    }
    for (const auto& g : j["supergroups"]) {
      RETURN_IF_ERROR(CheckKeys(g, "supergroups[]", {"op_list"}));
      if (!g.contains("op_list") || !g["op_list"].is_array() || g["op_list"].size() < 2) {
        return absl::InvalidArgumentError("supergroups[].op_list: expected 2 or more op types");
      }
      std::vector<std::string> ops;
      for (const auto& op : g["op_list"]) {
        if (!op.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("supergroups[].op_list: expected op type names, got ", op.dump()));
        }
        ops.push_back(op.get<std::string>());
      }
      c.supergroups.push_back(std::move(ops));
    }
  }
  if (j.contains("model_input")) {
    RETURN_IF_ERROR(CheckKeys(j["model_input"], "model_input", {"is_input_quantized", "bitwidth"}));
    ASSIGN_OR_RETURN(auto b, Bool(j["model_input"], "is_input_quantized", "model_input"));
    c.model_input_quantized = b.value_or(false);
    ASSIGN_OR_RETURN(c.model_input_bitwidth, Bitwidth(j["model_input"], "model_input"));
  } else {
    c.model_input_quantized = false;
  }
  if (j.contains("model_output")) {
    RETURN_IF_ERROR(CheckKeys(j["model_output"], "model_output", {"is_output_quantized"}));
    ASSIGN_OR_RETURN(auto b, Bool(j["model_output"], "is_output_quantized", "model_output"));
    c.model_output_quantized = b.value_or(false);
  } else {
    c.model_output_quantized = false;
  }
  return c;
}

absl::StatusOr<QuantSimConfig> LoadQuantSimConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read quantsim config ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseQuantSimConfig(ss.str());
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

}  // namespace qopt
