// The arithmetic of ONNX Runtime's CPU int8 kernels, for a simulation that computes what
// the deployed QDQ model computes (QuantSimOptions::kernels = kOnnxRuntimeInt8).
//
// ONNX Runtime fuses DequantizeLinear -> Conv / Add / GlobalAveragePool -> QuantizeLinear
// into QLinearConv, QLinearAdd and QLinearGlobalAveragePool, which compute on the
// integers: exact accumulation, the bias rounded to int32 at input scale x weight scale,
// requantization by a float32 multiplier, rounded half to even. The fake-quantize
// simulation (AIMET's) computes the same layers in float on dequantized values instead,
// so a few values land on a neighbouring grid level and depth spreads them.
//
// A kernel is computed in three parts so that the interpreter still runs the node's own
// op: PrepareKernelInputs turns the node's inputs into exact integers (float64) or the
// kernel's fused-multiply-add operands; the op runs on them (a float64 convolution of
// integers is exact: every partial sum is an integer far below 2^53); FinishKernel
// requantizes the result onto the output's grid, as a dequantized float32 tensor. The
// TorchScript export writes the same ATen ops, so the exported model computes it too.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/ivalue.h>

namespace qopt {

/// A per-tensor 8-bit activation grid as ONNX's uint8 QuantizeLinear holds it.
struct UInt8Grid {
  float scale = 1.0f;
  float inv_scale = 1.0f;  // 1.0f / scale, as the fake-quantize op computes it
  int64_t zero_point = 0;  // 0..255
};

struct IntegerKernel {
  enum class Kind { kConv, kAdd, kGlobalAveragePool };
  Kind kind = Kind::kConv;
  std::vector<UInt8Grid> inputs;  // conv, pool: the input; add: both operands
  UInt8Grid output;
  int output_value = -1;  // the value whose quantizer gives `output` (the node's, or after a ReLU / clip)
  // kConv
  at::Tensor weight;      // weight - weight zero point, float64 integers
  at::Tensor bias;        // int32 bias as float64 [out channels], undefined when none
  at::Tensor multiplier;  // float32 [out channels]: float32(x_scale * w_scale) / y_scale
  // kAdd: c = a * ratio_a + (b * ratio_b + fixed), each rounded once to float32
  float ratio_a = 0.0f, ratio_b = 0.0f, fixed = 0.0f;
};

/// The integers q - zero_point of a tensor of dequantized values on `grid`, as float64.
at::Tensor GridIntegers(const at::Tensor& x, const UInt8Grid& grid);

/// Replaces the node's tensor inputs by what the kernel's arithmetic starts from (conv:
/// input integers, integer weight, no bias; add: both operands' products; pool: input
/// integers).
void PrepareKernelInputs(const IntegerKernel& k, std::vector<c10::IValue>& inputs);

/// The node's output as the kernel gives it, dequantized: `raw` is what the op computed
/// on the prepared inputs; `pool_size` is the pooled window's element count (kGlobalAveragePool).
at::Tensor FinishKernel(const IntegerKernel& k, const at::Tensor& raw, int64_t pool_size);

/// ONNX's QuantizeLinear onto `grid` (x / scale, clamped, rounded half to even), as
/// dequantized values.
at::Tensor QuantizeLinear(const at::Tensor& x, const UInt8Grid& grid);

/// Requantization: float32(acc) * multiplier, clamped to the grid, rounded half to even,
/// as dequantized values.
at::Tensor Requantize(const at::Tensor& acc, const at::Tensor& multiplier, const UInt8Grid& grid);

/// Global average pool's multiplier: float32 x_scale / (y_scale * size), as a 0-d tensor.
at::Tensor PoolMultiplier(const UInt8Grid& in, const UInt8Grid& out, int64_t size);

}  // namespace qopt
