// Export to ONNX (opset 17): the IR's ops as ONNX ops, nodes named after the user's
// modules, parameters as initializers named like theirs (`layer1.0.conv1.weight`). With a
// QuantSim, quantize-dequantize pairs stand exactly where its quantizers sit, in the form
// ONNX Runtime's x86 int8 kernels take (uint8 activations, int8 weights):
//  - a quantized weight is stored as int8 values with a DequantizeLinear (per channel with
//    `axis` 0, or per tensor), zero point 0 wherever the values fit int8 around zero, so
//    any grid of 2..8 bits is exact;
//  - a quantized activation (or model input) gets QuantizeLinear + DequantizeLinear,
//    uint8 with zero point -offset: ONNX's saturation to [0, 255] is qopt's 8-bit grid; a
//    smaller grid (2..7 bits, strict symmetric) gets a Clip to its range before the pair,
//    which makes it exact again (a fallback the result names); grids of more than 8 bits
//    are refused;
//  - biases stay float (the runtime folds them into its int32 accumulation itself).
// Beside it, the encodings in AIMET's ONNX layout: keyed by ONNX tensor names.
// Control flow and ops without a mapping are refused, naming the op.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "quant/quantsim.h"

namespace qopt {

/// The opset the exporter writes.
constexpr int kOnnxOpset = 17;

/// Writes `graph` (with `sim`'s quantizers when not null) as an ONNX model to `path`, and
/// the encodings keyed by ONNX tensor names to `encodings_path` when `sim` is given and
/// the path is not empty. Shapes of `graph` must have been inferred (the inputs' shapes
/// are written with a symbolic batch dimension). InvalidArgument naming the op or the
/// quantizer that ONNX cannot express.
struct OnnxExport {
  std::string model;      // the serialized ModelProto
  std::string encodings;  // AIMET-format JSON keyed by ONNX tensor names; empty without a sim
  /// Quantizers written other than as a plain 8-bit pair, one line each ("activation x:
  /// 4-bit grid ... written as Clip ...").
  std::vector<std::string> fallbacks;
  int activation_quantizers = 0;  // QuantizeLinear / DequantizeLinear pairs
  int weight_quantizers = 0;      // weights stored as int8 behind DequantizeLinear
};

/// `graph` (with `sim`'s quantizers when not null) as an ONNX model, and with `sim` its
/// encodings keyed by ONNX tensor names. Shapes of `graph` must have been inferred (the
/// inputs' shapes are written with a symbolic batch dimension). InvalidArgument naming the
/// op or the quantizer that ONNX cannot express; nothing is produced then.
absl::StatusOr<OnnxExport> ExportOnnx(const Graph& graph, const QuantSim* sim);

}  // namespace qopt
