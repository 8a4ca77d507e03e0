// Per-tensor quantize-dequantize, the hot loop of the simulation.
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/encoding.h"

namespace qopt {

/// (clamp(nearbyint(x / scale) - offset, 0, num_steps) + offset) * scale, computed the way
/// torch.fake_quantize_per_tensor_affine computes it on the CPU, bit for bit, except that
/// values beyond +/-2^63 steps saturate (torch's integer cast wraps them to the low end).
/// On a float32 CPU tensor without autograd a vectorized loop runs, writing into `x`
/// itself when `inplace` is set; otherwise torch's op runs (straight-through gradient).
at::Tensor FakeQuantizePerTensor(const at::Tensor& x, const Encoding& e, bool inplace);

}  // namespace qopt
