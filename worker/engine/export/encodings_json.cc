#include "export/encodings_json.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "status.h"

namespace qopt {
namespace internal_encodings {

using json = nlohmann::ordered_json;

json ToJson(const Encoding& e) {
  json j;
  j["bitwidth"] = e.bitwidth;
  j["dtype"] = "int";
  j["is_symmetric"] = e.symmetric ? "True" : "False";
  j["max"] = e.max;
  j["min"] = e.min;
  j["offset"] = e.offset;
  j["scale"] = e.scale;
  return j;
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
  auto e = EncodingFromScaleOffset(j["bitwidth"].get<int>(), symmetric, j["scale"].get<double>(),
                                   j["offset"].get<int64_t>());
  if (!e.ok()) return Annotate(e.status(), where);
  return e;
}

}  // namespace internal_encodings

std::string EncodingsToJson(const QuantSim& sim) {
  using namespace internal_encodings;
  const Graph& g = sim.graph();
  json activations = json::object();
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (!q.has_encodings()) continue;
    const ActivationSite& site = sim.activation_sites().at(vid);
    activations[site.layer][site.is_input ? "input" : "output"][std::to_string(site.index)] =
        ToJson(q.encodings().front());
  }
  json params = json::object();
  for (const auto& [vid, q] : sim.param_quantizers()) {
    json list = json::array();
    for (const auto& e : q.encodings()) list.push_back(ToJson(e));
    params[g.values[vid].name] = std::move(list);
  }
  const QuantSimOptions& o = sim.options();
  json j;
  j["version"] = "0.6.1";
  j["activation_encodings"] = std::move(activations);
  j["param_encodings"] = std::move(params);
  j["excluded_layers"] = o.exclude_layers;
  j["quantizer_args"] = {
      {"activation_bitwidth", o.activation_bitwidth},
      {"dtype", "int"},
      {"is_symmetric", o.config.default_ops.is_symmetric.value_or(false)},
      {"param_bitwidth", o.param_bitwidth},
      {"per_channel_quantization", o.per_channel},
      {"quant_scheme", std::string(AimetQuantScheme(o.activation_method))},
  };
  return j.dump(2);
}

absl::Status LoadEncodingsJson(QuantSim& sim, const std::string& json_text, bool freeze) {
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
  const Graph& g = sim.graph();
  for (const auto& [name, list] : j["param_encodings"].items()) {
    int vid = -1;
    for (const auto& v : g.values) {
      if (v.is_param && v.name == name && !v.consumers.empty()) vid = v.id;
    }
    if (vid < 0) {
      return absl::NotFoundError(absl::StrCat("param_encodings: no parameter '", name, "'"));
    }
    const json entries = list.is_array() ? list : json::array({list});
    std::vector<Encoding> encodings;
    for (const auto& entry : entries) {
      ASSIGN_OR_RETURN(Encoding e, FromJson(entry, "param_encodings." + name));
      encodings.push_back(e);
    }
    RETURN_IF_ERROR(sim.SetParamEncodings(vid, std::move(encodings), freeze));
  }
  for (const auto& [layer, sides] : j["activation_encodings"].items()) {
    for (const char* side : {"input", "output"}) {
      if (!sides.contains(side)) continue;
      for (const auto& [index, entry] : sides[side].items()) {
        int idx = 0;
        if (!absl::SimpleAtoi(index, &idx)) {
          return absl::InvalidArgumentError(
              absl::StrCat("activation_encodings.", layer, ".", side, ": bad index '", index, "'"));
        }
        const int vid = sim.FindActivation(layer, std::string(side) == "input", idx);
        if (vid < 0) {
          return absl::NotFoundError(absl::StrCat("activation_encodings: no quantizer at ", layer,
                                                  " ", side, " ", index));
        }
        const json& e_json = entry.is_array() ? entry.at(0) : entry;
        ASSIGN_OR_RETURN(Encoding e, FromJson(e_json, absl::StrCat("activation_encodings.", layer)));
        RETURN_IF_ERROR(sim.SetActivationEncodings(vid, {e}, freeze));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status LoadEncodingsFile(QuantSim& sim, const std::string& path, bool freeze) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read encodings file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return Annotate(LoadEncodingsJson(sim, ss.str(), freeze), path);
}

}  // namespace qopt
