// Where quantizers go: AIMET's quantsim config file format (keys `defaults`, `params`,
// `op_type`, `supergroups`, `model_input`, `model_output`), plus `layers` to override
// single layers by name. Booleans may be JSON booleans or AIMET's "True"/"False" strings.
// Op and parameter rules, and `model_input`, may also give a `bitwidth` (qopt extension:
// mixed precision per op type or per layer).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt {

struct ParamRule {
  std::optional<bool> is_quantized;
  std::optional<bool> is_symmetric;
  std::optional<int> bitwidth;  // 2..16; default: the recipe's param_bitwidth
};

struct OpRule {
  std::optional<bool> is_input_quantized;
  std::optional<bool> is_output_quantized;
  std::optional<bool> is_symmetric;
  std::optional<bool> per_channel_quantization;
  std::optional<int> bitwidth;  // of the output quantizer, 2..16; default: activation_bitwidth
  std::map<std::string, ParamRule> params;  // "weight", "bias", ...
};

struct QuantSimConfig {
  OpRule default_ops;                        // defaults.ops
  ParamRule default_params;                  // defaults.params
  std::optional<bool> strict_symmetric;      // defaults.strict_symmetric
  std::optional<bool> unsigned_symmetric;    // defaults.unsigned_symmetric
  std::optional<bool> per_channel_quantization;  // defaults.per_channel_quantization
  std::map<std::string, ParamRule> params;   // by parameter role
  std::map<std::string, OpRule> op_types;    // by op type ("Conv", "Relu", ...)
  std::map<std::string, OpRule> layers;      // by layer name (qopt extension)
  std::vector<std::vector<std::string>> supergroups;
  bool model_input_quantized = true;
  std::optional<int> model_input_bitwidth;   // model_input.bitwidth; default activation_bitwidth
  bool model_output_quantized = true;

  /// The built-in default: outputs of compute ops quantized (asymmetric), weights
  /// quantized (symmetric), biases not, supergroups conv/linear/bn/add + relu/relu6.
  static QuantSimConfig Default();
};

/// Parses a config from JSON text; errors name the offending key path.
absl::StatusOr<QuantSimConfig> ParseQuantSimConfig(const std::string& json_text);
absl::StatusOr<QuantSimConfig> LoadQuantSimConfig(const std::string& path);

/// `config` as JSON text that ParseQuantSimConfig reads back to the same config (keys set
/// only where the config sets them; booleans as JSON booleans).
std::string QuantSimConfigToJson(const QuantSimConfig& config);

}  // namespace qopt
