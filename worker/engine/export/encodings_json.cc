#include "export/encodings_json.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "export/encodings_file.h"
#include "status.h"

namespace qopt {

nlohmann::ordered_json EncodingToJson(const Encoding& e) {
  nlohmann::ordered_json j;
  j["bitwidth"] = e.bitwidth;
  j["dtype"] = "int";
  j["is_symmetric"] = e.symmetric ? "True" : "False";
  j["max"] = e.max;
  j["min"] = e.min;
  j["offset"] = e.offset;
  j["scale"] = e.scale;
  return j;
}

std::string EncodingsToJson(const QuantSim& sim) {
  using json = nlohmann::ordered_json;
  const Graph& g = sim.graph();
  json activations = json::object();
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (!q.has_encodings()) continue;
    const ActivationSite& site = sim.activation_sites().at(vid);
    activations[site.layer][site.is_input ? "input" : "output"][std::to_string(site.index)] =
        EncodingToJson(q.encodings().front());
  }
  json params = json::object();
  for (const auto& [vid, q] : sim.param_quantizers()) {
    json list = json::array();
    for (const auto& e : q.encodings()) list.push_back(EncodingToJson(e));
    params[g.values[vid].name] = std::move(list);
  }
  return EncodingsDocument(sim, std::move(activations), std::move(params)).dump(2);
}

nlohmann::ordered_json EncodingsDocument(const QuantSim& sim, nlohmann::ordered_json activations,
                                         nlohmann::ordered_json params) {
  using json = nlohmann::ordered_json;
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
  return j;
}

absl::Status LoadEncodingsJson(QuantSim& sim, const std::string& json_text, bool freeze) {
  ASSIGN_OR_RETURN(EncodingsFile file, ParseEncodingsJson(json_text));
  const Graph& g = sim.graph();
  for (auto& [name, encodings] : file.params) {
    int vid = -1;
    for (const auto& v : g.values) {
      if (v.is_param && v.name == name && !v.consumers.empty()) vid = v.id;
    }
    if (vid < 0) {
      return absl::NotFoundError(absl::StrCat("param_encodings: no parameter '", name, "'"));
    }
    RETURN_IF_ERROR(sim.SetParamEncodings(vid, std::move(encodings), freeze));
  }
  for (const ActivationEncodingEntry& a : file.activations) {
    const int vid = sim.FindActivation(a.layer, a.is_input, a.index);
    if (vid < 0) {
      return absl::NotFoundError(absl::StrCat("activation_encodings: no quantizer at ", a.layer, " ",
                                              a.is_input ? "input" : "output", " ", a.index));
    }
    RETURN_IF_ERROR(sim.SetActivationEncodings(vid, {a.encoding}, freeze));
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
