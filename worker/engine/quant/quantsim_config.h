// Where quantizers go: AIMET's quantsim config file format (keys `defaults`, `params`,
// `op_type`, `supergroups`, `model_input`, `model_output`), plus `layers` to override
// single layers by name. Booleans may be JSON booleans or AIMET's "True"/"False" strings.
// Op and parameter rules, and `model_input`, may also give a `bitwidth` (qopt extension:
// mixed precision per op type or per layer). Every key read is applied or checked:
// `is_input_quantized`, `encoding_constraints` (fixed output encodings) and
// `supported_kernels` (a layer quantized to a kernel the target lacks is refused) are
// applied by QuantSim; `hw_version` is recorded and written back.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt {

struct ParamRule {
  std::optional<bool> is_quantized;
  std::optional<bool> is_symmetric;
  std::optional<int> bitwidth;  // 2..16; default: the recipe's param_bitwidth
};

/// One entry of `supported_kernels`: an activation and a parameter bitwidth the target
/// runs (qopt quantizes to integers only, so only `dtype: "int"` entries can match).
struct SupportedKernel {
  int activation_bits = 8;
  std::string activation_dtype = "int";
  int param_bits = 8;
  std::string param_dtype = "int";
  std::string Name() const;  // "W8A16", or "W16A16 (float)" for float kernels
  /// An integer kernel of these bitwidths (either may be unknown: any).
  bool Runs(std::optional<int> activation, std::optional<int> param) const;
};

struct OpRule {
  /// Quantize the op's tensor inputs (a value read by several ops is quantized for all).
  std::optional<bool> is_input_quantized;
  std::optional<bool> is_output_quantized;
  std::optional<bool> is_symmetric;
  std::optional<bool> per_channel_quantization;
  std::optional<int> bitwidth;  // of the output quantizer, 2..16; default: activation_bitwidth
  std::map<std::string, ParamRule> params;  // "weight", "bias", ...
  /// A fixed output encoding over [min, max], never calibrated (AIMET: sigmoid, softmax).
  std::optional<std::pair<double, double>> encoding_constraints;
  /// Kernels the target has for this op; a layer quantized otherwise is refused.
  std::vector<SupportedKernel> supported_kernels;
};

struct QuantSimConfig {
  OpRule default_ops;                        // defaults.ops
  ParamRule default_params;                  // defaults.params
  std::optional<bool> strict_symmetric;      // defaults.strict_symmetric
  std::optional<bool> unsigned_symmetric;    // defaults.unsigned_symmetric
  std::optional<bool> per_channel_quantization;  // defaults.per_channel_quantization
  std::vector<SupportedKernel> supported_kernels;  // defaults.supported_kernels: every op
  std::optional<std::string> hw_version;     // defaults.hw_version: recorded, written back
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
