// AIMET-format encodings files (version "0.6.1"): `activation_encodings` by layer name
// ({"input"|"output": {"<index>": encoding}}), `param_encodings` by parameter name (a list:
// one entry, or one per channel), `excluded_layers` and `quantizer_args`. Layer and
// parameter names are those of the exported TorchScript model.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "quant/quantsim.h"

namespace qopt {

/// One encoding as an AIMET-format entry (bitwidth, dtype, is_symmetric, max, min,
/// offset, scale).
nlohmann::ordered_json EncodingToJson(const Encoding& e);

/// The encodings of `sim` as AIMET-format JSON text.
std::string EncodingsToJson(const QuantSim& sim);

/// An AIMET-format encodings document for `sim` (version, excluded_layers,
/// quantizer_args) around the given activation and parameter entries, whatever names
/// they are keyed by (TorchScript layers, ONNX tensors).
nlohmann::ordered_json EncodingsDocument(const QuantSim& sim, nlohmann::ordered_json activations,
                                         nlohmann::ordered_json params);

/// Loads encodings into `sim`, replacing computed ones; `freeze` keeps them through later
/// calibration. Every entry must name a quantizer of `sim` (NotFound otherwise).
absl::Status LoadEncodingsJson(QuantSim& sim, const std::string& json_text, bool freeze);
absl::Status LoadEncodingsFile(QuantSim& sim, const std::string& path, bool freeze);

}  // namespace qopt
