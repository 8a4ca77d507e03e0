#include "quant/integer_kernels.h"

#include <ATen/ATen.h>

namespace qopt {

at::Tensor GridIntegers(const at::Tensor& x, const UInt8Grid& grid) {
  return at::round(x.mul(grid.inv_scale)).to(at::kDouble);
}

void PrepareKernelInputs(const IntegerKernel& k, std::vector<c10::IValue>& inputs) {
  switch (k.kind) {
    case IntegerKernel::Kind::kConv:
      inputs[0] = GridIntegers(inputs[0].toTensor(), k.inputs[0]);
      inputs[1] = k.weight;
      inputs[2] = c10::IValue();
      return;
    case IntegerKernel::Kind::kAdd: {
      // The uint8 values times their ratios: exact in float64 (8 by 24 bits). The second
      // operand's multiply-add is rounded to float32 here; the add rounds the first's.
      const UInt8Grid& a = k.inputs[0];
      const UInt8Grid& b = k.inputs[1];
      inputs[0] = GridIntegers(inputs[0].toTensor(), a).add(a.zero_point).mul(k.ratio_a);
      inputs[1] = GridIntegers(inputs[1].toTensor(), b)
                      .add(b.zero_point)
                      .mul(k.ratio_b)
                      .add(k.fixed)
                      .to(at::kFloat)
                      .to(at::kDouble);
      return;
    }
    case IntegerKernel::Kind::kGlobalAveragePool:
      inputs[0] = GridIntegers(inputs[0].toTensor(), k.inputs[0]);
      return;
  }
}

at::Tensor QuantizeLinear(const at::Tensor& x, const UInt8Grid& grid) {
  return x.div(grid.scale).clamp(-grid.zero_point, 255 - grid.zero_point).round().mul(grid.scale);
}

at::Tensor Requantize(const at::Tensor& acc, const at::Tensor& multiplier, const UInt8Grid& grid) {
  return acc.to(at::kFloat)
      .mul(multiplier)
      .clamp(-grid.zero_point, 255 - grid.zero_point)
      .round()
      .mul(grid.scale);
}

at::Tensor PoolMultiplier(const UInt8Grid& in, const UInt8Grid& out, int64_t size) {
  return at::scalar_tensor(in.scale, at::kFloat).div(at::scalar_tensor(out.scale, at::kFloat).mul(size));
}

at::Tensor FinishKernel(const IntegerKernel& k, const at::Tensor& raw, int64_t pool_size) {
  switch (k.kind) {
    case IntegerKernel::Kind::kConv: {
      const at::Tensor acc = k.bias.defined() ? raw.add(k.bias.view({1, -1, 1, 1})) : raw;
      return Requantize(acc, k.multiplier.view({1, -1, 1, 1}), k.output);
    }
    case IntegerKernel::Kind::kAdd:
      return raw.to(at::kFloat).round().clamp(0, 255).sub(k.output.zero_point).mul(k.output.scale);
    case IntegerKernel::Kind::kGlobalAveragePool:
      // The pool averaged exact integers in float64: times the size, rounded, is their sum.
      return Requantize(raw.mul(pool_size).round(), PoolMultiplier(k.inputs[0], k.output, pool_size), k.output);
  }
  return raw;
}

}  // namespace qopt
