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

/// The same values with a straight-through gradient: `x`'s gradient passes where
/// nearbyint(x / scale) lands on the grid, and is zero elsewhere. On a float32 CPU tensor
/// one vectorized pass computes the output and that mask (torch's op takes several).
at::Tensor FakeQuantizePerTensorSte(const at::Tensor& x, const Encoding& e);

/// Quantize-dequantize on a learned grid: `scale` and `zero_point` are one-element
/// float32 tensors (the zero point integral, on [0, quant_max]). Values as
/// FakeQuantizePerTensor; gradients: x straight through on the grid; scale
/// round(x/s) - x/s on the grid, the clipped level minus the zero point off it; zero
/// point -scale off the grid (LSQ's formulas), both times `grad_factor`. The same as
/// torch._fake_quantize_learnable_per_tensor_affine, in one pass each way on the CPU.
at::Tensor FakeQuantizeLearnedPerTensor(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                        int64_t quant_max, double grad_factor);

/// The same per channel along `axis` (scale and zero point of one element per channel):
/// each channel as FakeQuantizeLearnedPerTensor. One pass each way on the CPU for a float32
/// tensor (channels moved to the front first unless they are there, as in most weights);
/// composed torch ops elsewhere.
at::Tensor FakeQuantizeLearnedPerChannel(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                         int64_t axis, int64_t quant_max, double grad_factor);

}  // namespace qopt
