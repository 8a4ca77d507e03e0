#include "quant/fake_quantize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QOPT_AVX2_DISPATCH 1
#endif

namespace qopt {
namespace internal_fake_quantize {

// Values are clamped a step beyond the grid before rounding, so |v| < 2^22 and adding and
// subtracting 1.5 * 2^23 rounds half to even, as nearbyint does in the default mode.
// min/max keep SSE's operand order (the second operand wins on NaN), in both loops, so NaN
// ends at the grid's low end as it does in torch. With `inside`, also writes 1 there where
// the rounded value is on the grid (the straight-through gradient's mask), else 0.
void Loop(const float* src, float* dst, int64_t n, float scale, float z, float lo, float hi,
          uint8_t* inside = nullptr) {
  const float inv_scale = 1.0f / scale;
  const float pre_lo = lo - z - 1.0f, pre_hi = hi - z + 1.0f;
  constexpr float kRound = 12582912.0f;
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 v_inv = _mm_set1_ps(inv_scale), v_scale = _mm_set1_ps(scale),
               v_z = _mm_set1_ps(z), v_lo = _mm_set1_ps(lo), v_hi = _mm_set1_ps(hi),
               v_pre_lo = _mm_set1_ps(pre_lo), v_pre_hi = _mm_set1_ps(pre_hi),
               v_round = _mm_set1_ps(kRound);
  for (; i + 4 <= n; i += 4) {
    __m128 v = _mm_mul_ps(_mm_loadu_ps(src + i), v_inv);
    v = _mm_min_ps(_mm_max_ps(v, v_pre_lo), v_pre_hi);
    v = _mm_add_ps(_mm_sub_ps(_mm_add_ps(v, v_round), v_round), v_z);
    if (inside != nullptr) {
      const int on_grid = _mm_movemask_ps(_mm_and_ps(_mm_cmpge_ps(v, v_lo), _mm_cmple_ps(v, v_hi)));
      for (int k = 0; k < 4; ++k) inside[i + k] = static_cast<uint8_t>((on_grid >> k) & 1);
    }
    v = _mm_min_ps(_mm_max_ps(v, v_lo), v_hi);
    _mm_storeu_ps(dst + i, _mm_mul_ps(_mm_sub_ps(v, v_z), v_scale));
  }
#endif
  for (; i < n; ++i) {
    float v = src[i] * inv_scale;
    v = v > pre_lo ? v : pre_lo;
    v = v < pre_hi ? v : pre_hi;
    v = (v + kRound) - kRound;
    v = v + z;
    if (inside != nullptr) inside[i] = static_cast<uint8_t>((v >= lo) & (v <= hi));
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    dst[i] = (v - z) * scale;
  }
}

// Loop without the mask, in fewer operations and the same values: clamping u = v / scale
// to the integer bounds lo - z, hi - z before rounding gives the levels Loop gives
// (rounding keeps integers and order), and (level - z) * scale = round(u) * scale.
// NaN ends at lo as in Loop (max first, the bound as SSE's winning second operand).
void LevelsLoop(const float* src, float* dst, int64_t n, float scale, float z, float lo, float hi) {
  const float inv_scale = 1.0f / scale;
  const float low = lo - z, high = hi - z;
  constexpr float kRound = 12582912.0f;
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 v_inv = _mm_set1_ps(inv_scale), v_scale = _mm_set1_ps(scale), v_low = _mm_set1_ps(low),
               v_high = _mm_set1_ps(high), v_round = _mm_set1_ps(kRound);
  for (; i + 4 <= n; i += 4) {
    __m128 v = _mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(src + i), v_inv), v_low), v_high);
    v = _mm_sub_ps(_mm_add_ps(v, v_round), v_round);
    _mm_storeu_ps(dst + i, _mm_mul_ps(v, v_scale));
  }
#endif
  for (; i < n; ++i) {
    float v = src[i] * inv_scale;
    v = v > low ? v : low;
    v = v < high ? v : high;
    dst[i] = ((v + kRound) - kRound) * scale;
  }
}

#if defined(QOPT_AVX2_DISPATCH)
// LevelsLoop eight values at a time, on CPUs with AVX2 (the build targets plain x86-64).
__attribute__((target("avx2"))) void LevelsLoopAvx2(const float* src, float* dst, int64_t n, float scale, float z,
                                                    float lo, float hi) {
  const float inv_scale = 1.0f / scale;
  const __m256 v_inv = _mm256_set1_ps(inv_scale), v_scale = _mm256_set1_ps(scale), v_low = _mm256_set1_ps(lo - z),
               v_high = _mm256_set1_ps(hi - z), v_round = _mm256_set1_ps(12582912.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(src + i), v_inv), v_low), v_high);
    v = _mm256_sub_ps(_mm256_add_ps(v, v_round), v_round);
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(v, v_scale));
  }
  LevelsLoop(src + i, dst + i, n - i, scale, z, lo, hi);
}
#endif

// Fake-quantizes n values on one grid, with the widest vectors the CPU has.
void QuantizeRange(const float* src, float* dst, int64_t n, float scale, float z, float lo, float hi) {
#if defined(QOPT_AVX2_DISPATCH)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return LevelsLoopAvx2(src, dst, n, scale, z, lo, hi);
#endif
  LevelsLoop(src, dst, n, scale, z, lo, hi);
}

// The gradients of the learned grid's fake-quantize over n values (x, and the output's
// gradient g): dx = g where x's level is on the grid, else 0; adds to *d_scale the sum of
// g * (round(u) - u) on the grid, g * (0 - z) below it and g * (hi - z) above it
// (u = x / scale), and to *d_zero the sum of -g * scale off the grid. Levels are found as
// Loop finds them (NaN lands below the grid there, so here too).
void LearnedGradLoop(const float* x, const float* g, float* dx, int64_t n, float scale, float z, float hi,
                     double* d_scale, double* d_zero) {
  const float inv_scale = 1.0f / scale;
  const float pre_lo = -z - 1.0f, pre_hi = hi - z + 1.0f;
  constexpr float kRound = 12582912.0f;
  float ds = 0.0f, off_sum = 0.0f;
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 v_inv = _mm_set1_ps(inv_scale), v_z = _mm_set1_ps(z), v_hi = _mm_set1_ps(hi),
               v_zero = _mm_setzero_ps(), v_minus_z = _mm_set1_ps(-z), v_pre_lo = _mm_set1_ps(pre_lo),
               v_pre_hi = _mm_set1_ps(pre_hi), v_round = _mm_set1_ps(kRound);
  __m128 v_ds = _mm_setzero_ps(), v_off = _mm_setzero_ps();
  for (; i + 4 <= n; i += 4) {
    const __m128 u = _mm_mul_ps(_mm_loadu_ps(x + i), v_inv);
    const __m128 clamped = _mm_min_ps(_mm_max_ps(u, v_pre_lo), v_pre_hi);
    const __m128 r = _mm_sub_ps(_mm_add_ps(clamped, v_round), v_round);
    const __m128 level = _mm_add_ps(r, v_z);
    const __m128 above = _mm_cmpgt_ps(level, v_hi);
    const __m128 off = _mm_or_ps(_mm_cmplt_ps(level, v_zero), above);
    const __m128 gv = _mm_loadu_ps(g + i);
    _mm_storeu_ps(dx + i, _mm_andnot_ps(off, gv));
    // Off the grid: -z below, hi - z above; on it: round(u) - u.
    const __m128 off_term = _mm_add_ps(v_minus_z, _mm_and_ps(above, v_hi));
    const __m128 term = _mm_or_ps(_mm_and_ps(off, off_term), _mm_andnot_ps(off, _mm_sub_ps(r, u)));
    v_ds = _mm_add_ps(v_ds, _mm_mul_ps(gv, term));
    v_off = _mm_add_ps(v_off, _mm_and_ps(off, gv));
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, v_ds);
  ds = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  _mm_store_ps(lanes, v_off);
  off_sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
  for (; i < n; ++i) {
    const float u = x[i] * inv_scale;
    float v = u > pre_lo ? u : pre_lo;
    v = v < pre_hi ? v : pre_hi;
    const float r = (v + kRound) - kRound;
    const float level = r + z;
    const bool above = level > hi, off = level < 0.0f || above;
    dx[i] = off ? 0.0f : g[i];
    ds += g[i] * (off ? (above ? hi - z : -z) : r - u);
    off_sum += off ? g[i] : 0.0f;
  }
  *d_scale += ds;
  *d_zero -= static_cast<double>(off_sum) * scale;
}

}  // namespace internal_fake_quantize

at::Tensor FakeQuantizePerTensor(const at::Tensor& x, const Encoding& e, bool inplace) {
  const bool needs_grad = x.requires_grad() && at::GradMode::is_enabled();
  if (needs_grad || !x.device().is_cpu() || x.scalar_type() != at::kFloat) {
    return at::fake_quantize_per_tensor_affine(x, e.scale, e.zero_point(), e.quant_min(),
                                               e.quant_max());
  }
  const bool write_in_place = inplace && x.is_contiguous();
  const at::Tensor in = x.contiguous();
  at::Tensor out = write_in_place ? x : at::empty_like(in);
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float scale = static_cast<float>(e.scale);
  const float z = static_cast<float>(e.zero_point());
  const float lo = static_cast<float>(e.quant_min()), hi = static_cast<float>(e.quant_max());
  at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    internal_fake_quantize::QuantizeRange(src + begin, dst + begin, end - begin, scale, z, lo, hi);
  });
  return out;
}

namespace {

// y = fake-quantize(x), dy/dx = the saved mask.
struct PerTensorSte : public torch::autograd::Function<PerTensorSte> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, double scale, int64_t zero_point,
                            int64_t quant_max) {
    const at::Tensor in = x.contiguous();
    at::Tensor out = at::empty_like(in);
    at::Tensor inside = at::empty(in.sizes(), in.options().dtype(at::kBool));
    const float* src = in.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    uint8_t* mask = reinterpret_cast<uint8_t*>(inside.data_ptr<bool>());
    const float s = static_cast<float>(scale), z = static_cast<float>(zero_point), hi = static_cast<float>(quant_max);
    at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      internal_fake_quantize::Loop(src + begin, dst + begin, end - begin, s, z, 0.0f, hi, mask + begin);
    });
    ctx->save_for_backward({inside});
    return out;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    // g where the mask is set, else 0, in one pass (a multiplication by the boolean mask
    // would first convert it to float, and cost more than the forward pass).
    const at::Tensor inside = ctx->get_saved_variables()[0];
    const at::Tensor g = grads[0].contiguous();
    at::Tensor dx = at::empty_like(g);
    const uint8_t* mask = reinterpret_cast<const uint8_t*>(inside.data_ptr<bool>());
    const float* gs = g.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    at::parallel_for(0, g.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = mask[i] ? gs[i] : 0.0f;
    });
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Fake-quantize on learned grids: x is `channels` contiguous blocks (one block: a grid for
// the whole tensor), each with its own scale and zero point. The forward pass keeps only
// its inputs; the backward pass recomputes each value's level and sums the grid's
// gradients over fixed chunks of each block, then over the chunks in order, so the result
// does not depend on the number of threads.
struct LearnedGrid : public torch::autograd::Function<LearnedGrid> {
  static constexpr int64_t kChunk = 1 << 14;

  // Calls chunk(c, begin, end) for every chunk [begin, end) of x's flat index, c its
  // block, in parallel; chunk k of the whole tensor is the k-th in block order.
  template <typename F>
  static void ForEachChunk(int64_t channels, int64_t block, const F& chunk) {
    const int64_t per_block = (block + kChunk - 1) / kChunk;
    at::parallel_for(0, channels * per_block, 1, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k) {
        const int64_t c = k / per_block, begin = c * block + (k % per_block) * kChunk;
        chunk(k, c, begin, std::min(c * block + block, begin + kChunk));
      }
    });
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t quant_max, double grad_factor) {
    const at::Tensor s = scale.detach().to(at::kFloat).contiguous();
    const at::Tensor z = zero_point.detach().to(at::kFloat).clamp(0.0, quant_max).round().contiguous();
    const int64_t channels = s.numel();
    TORCH_CHECK(channels > 0 && x.numel() % channels == 0, "a learned grid of ", channels,
                " channels for a tensor of ", x.numel(), " values");
    TORCH_CHECK((s.gt(0) & s.isfinite()).all().item<bool>(), "a learned scale is not a positive number: ", s);
    const at::Tensor in = x.contiguous();
    at::Tensor out = at::empty_like(in);
    const float hi = static_cast<float>(quant_max);
    const float* src = in.data_ptr<float>();
    const float* sp = s.data_ptr<float>();
    const float* zp = z.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    ForEachChunk(channels, in.numel() / channels, [&](int64_t, int64_t c, int64_t begin, int64_t end) {
      internal_fake_quantize::QuantizeRange(src + begin, dst + begin, end - begin, sp[c], zp[c], 0.0f, hi);
    });
    ctx->save_for_backward({in, s, z});
    ctx->saved_data["qmax"] = quant_max;
    ctx->saved_data["gf"] = grad_factor;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &s = saved[1], &z = saved[2];
    const at::Tensor g = grads[0].contiguous();
    const float hi = static_cast<float>(ctx->saved_data["qmax"].toInt());
    const double gf = ctx->saved_data["gf"].toDouble();
    at::Tensor dx = at::empty_like(x);
    const int64_t channels = s.numel(), block = x.numel() / channels;
    const int64_t per_block = (block + kChunk - 1) / kChunk;
    std::vector<double> chunk_scale(channels * per_block, 0.0), chunk_zero(channels * per_block, 0.0);
    const float* xs = x.data_ptr<float>();
    const float* gs = g.data_ptr<float>();
    const float* sp = s.data_ptr<float>();
    const float* zp = z.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    ForEachChunk(channels, block, [&](int64_t k, int64_t c, int64_t begin, int64_t end) {
      internal_fake_quantize::LearnedGradLoop(xs + begin, gs + begin, out + begin, end - begin, sp[c], zp[c], hi,
                                              &chunk_scale[k], &chunk_zero[k]);
    });
    std::vector<double> d_scale(channels, 0.0), d_zero(channels, 0.0);
    for (int64_t k = 0; k < channels * per_block; ++k) {
      d_scale[k / per_block] += chunk_scale[k];
      d_zero[k / per_block] += chunk_zero[k];
    }
    const at::TensorOptions options = x.options().dtype(at::kDouble);
    const at::Tensor scale_grad = (at::tensor(d_scale, options) * gf).to(at::kFloat);
    const at::Tensor zero_grad = (at::tensor(d_zero, options) * gf).to(at::kFloat);
    return {dx, scale_grad, zero_grad, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor FakeQuantizeLearnedPerTensor(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                        int64_t quant_max, double grad_factor) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat) {
    return at::_fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, 0, quant_max, grad_factor);
  }
  return LearnedGrid::apply(x, scale, zero_point, quant_max, grad_factor);
}

at::Tensor FakeQuantizeLearnedPerChannel(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                         int64_t axis, int64_t quant_max, double grad_factor) {
  if (x.device().is_cpu() && x.scalar_type() == at::kFloat) {
    if (axis == 0) return LearnedGrid::apply(x, scale, zero_point, quant_max, grad_factor);
    return LearnedGrid::apply(x.movedim(axis, 0), scale, zero_point, quant_max, grad_factor).movedim(0, axis);
  }
  // Elsewhere composed ops with the kernel's values: straight-through rounding, and
  // `grad_factor` applied to the grid's gradients only.
  auto scaled_grad = [grad_factor](const at::Tensor& t) { return t.detach() + (t - t.detach()) * grad_factor; };
  std::vector<int64_t> shape(x.dim(), 1);
  shape[axis] = x.size(axis);
  const at::Tensor s = scaled_grad(scale).view(shape);
  const at::Tensor z = scaled_grad(zero_point).view(shape);
  const at::Tensor u = x * at::reciprocal(s);
  const at::Tensor rounded = at::round(u).detach() + (u - u.detach());
  return (at::clamp(rounded + z, 0.0, static_cast<double>(quant_max)) - z) * s;
}

at::Tensor FakeQuantizePerTensorSte(const at::Tensor& x, const Encoding& e) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat) {
    return at::fake_quantize_per_tensor_affine(x, e.scale, e.zero_point(), e.quant_min(), e.quant_max());
  }
  return PerTensorSte::apply(x, e.scale, e.zero_point(), e.quant_max());
}

}  // namespace qopt
