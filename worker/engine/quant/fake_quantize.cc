#include "quant/fake_quantize.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace qopt {
namespace internal_fake_quantize {

// Values are clamped a step beyond the grid before rounding, so |v| < 2^22 and adding and
// subtracting 1.5 * 2^23 rounds half to even, as nearbyint does in the default mode.
// min/max keep SSE's operand order (the second operand wins on NaN), in both loops, so NaN
// ends at the grid's low end as it does in torch.
void Loop(const float* src, float* dst, int64_t n, float scale, float z, float lo, float hi) {
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
    v = _mm_sub_ps(_mm_add_ps(v, v_round), v_round);
    v = _mm_min_ps(_mm_max_ps(_mm_add_ps(v, v_z), v_lo), v_hi);
    _mm_storeu_ps(dst + i, _mm_mul_ps(_mm_sub_ps(v, v_z), v_scale));
  }
#endif
  for (; i < n; ++i) {
    float v = src[i] * inv_scale;
    v = v > pre_lo ? v : pre_lo;
    v = v < pre_hi ? v : pre_hi;
    v = (v + kRound) - kRound;
    v = v + z;
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    dst[i] = (v - z) * scale;
  }
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
    internal_fake_quantize::Loop(src + begin, dst + begin, end - begin, scale, z, lo, hi);
  });
  return out;
}

}  // namespace qopt
