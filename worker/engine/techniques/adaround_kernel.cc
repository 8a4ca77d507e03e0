#include "techniques/adaround_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <xmmintrin.h>
// One copy per instruction set, chosen by the loader from the CPU it runs on.
#define QOPT_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define QOPT_HAS_MXCSR 1
#else
#define QOPT_KERNEL_CLONES
#endif

#define QOPT_ALWAYS_INLINE inline __attribute__((always_inline))

namespace qopt {
namespace adaround_kernel {
namespace {

constexpr float kSpan = kZeta - kGamma;
constexpr float kBeta1 = 0.9f, kBeta2 = 0.999f, kEps = 1e-8f;

// Denormals as zero for the duration of a pass, on this thread only: Adam's moments of
// weights whose h(V) saturated decay geometrically and would otherwise spend thousands of
// iterations in the denormal range, where each multiplication is a microcode assist.
class FlushDenormals {
 public:
#ifdef QOPT_HAS_MXCSR
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

QOPT_ALWAYS_INLINE float BitsToFloat(int32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
QOPT_ALWAYS_INLINE int32_t FloatToBits(float f) {
  int32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln 2 / 2; exp(r) by its Taylor series to
// degree 6 (truncation < 2e-7 relative). Branch-free so loops over it vectorize.
QOPT_ALWAYS_INLINE float ExpInline(float x) {
  x = std::min(88.0f, std::max(-87.0f, x));
  // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  // ln 2 in two parts, so that n * ln 2 loses nothing to rounding.
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t e = FloatToBits(shifted) - 0x4B400000;  // n as an integer
  return p * BitsToFloat((e + 127) << 23);
}

// log(x) for positive normal x: x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1, and
// log(1 + f) = f - f^2 / 2 + f^3 Q(f), Q of degree 6 fitted by weighted least squares to
// the relative error of log(1 + f) over that range (1.4e-7 at most in float arithmetic).
// No division, unlike the atanh series, so it costs only multiply-adds.
QOPT_ALWAYS_INLINE float LogInline(float x) {
  const int32_t bits = FloatToBits(x);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = BitsToFloat((bits & 0x7fffff) | 0x3f800000);
  const bool high = m > 1.41421356f;
  m = high ? m * 0.5f : m;
  e += high ? 1 : 0;
  const float f = m - 1.0f;
  float q = 0.08506953377976917f;
  q = q * f - 0.14197471796822728f;
  q = q * f + 0.14950979494252348f;
  q = q * f - 0.16587949064427865f;
  q = q * f + 0.19960596533920094f;
  q = q * f - 0.250009693711815f;
  q = q * f + 0.33333972564698483f;
  return static_cast<float>(e) * 0.693147180559945f + (f - 0.5f * f * f + f * f * f * q);
}

QOPT_ALWAYS_INLINE float Sigmoid(float v) { return 1.0f / (1.0f + ExpInline(-v)); }

// sig and the soft weight of V, elements [i, stop) of one channel.
QOPT_ALWAYS_INLINE void SoftWeightRun(const State& st, float sc, float zp, int64_t i, int64_t stop) {
  float* __restrict sig = st.sig;
  float* __restrict out = st.soft_weight;
  const float* __restrict v = st.v;
  const float* __restrict wf = st.w_floor;
  const float n = st.num_steps;
#pragma GCC ivdep  // the arrays never overlap
  for (int64_t k = i; k < stop; ++k) {
    const float sg = Sigmoid(v[k]);
    sig[k] = sg;
    const float h = std::min(1.0f, std::max(0.0f, sg * kSpan + kGamma));
    out[k] = (std::min(n, std::max(0.0f, wf[k] + h + zp)) - zp) * sc;
  }
}

template <bool kRegularize>
QOPT_ALWAYS_INLINE void StepRun(const State& st, const float* __restrict gw, const StepSettings& set, float sc,
                                float zp, int64_t i, int64_t stop) {
  float* __restrict v = st.v;
  float* __restrict m = st.adam_m;
  float* __restrict s2 = st.adam_s;
  float* __restrict sig = st.sig;
  float* __restrict out = st.soft_weight;
  const float* __restrict wf = st.w_floor;
  const float n = st.num_steps;
  const float reg = 2.0f * set.reg_param * set.beta;
  const float power = set.beta - 1.0f;
  const float lr = set.learning_rate;
  // Adam's bias corrections as factors, to spare two divisions per weight.
  const float inv_c1 = 1.0f / set.bias_correction1, inv_sqrt_c2 = 1.0f / std::sqrt(set.bias_correction2);
#pragma GCC ivdep  // the arrays never overlap
  for (int64_t k = i; k < stop; ++k) {
    const float sg = sig[k];
    const float h_raw = sg * kSpan + kGamma;
    const float h = std::min(1.0f, std::max(0.0f, h_raw));
    const float q = wf[k] + h + zp;
    const float grad = gw[k] * sc;  // loaded whether used or not, so the loop has no branches
    float dh = (q >= 0.0f && q <= n) ? grad : 0.0f;
    if (kRegularize) {
      // d/dh of reg * (1 - |2h - 1|^beta) = -2 reg beta |2h - 1|^(beta - 1) sign(2h - 1)
      const float u = 2.0f * h - 1.0f;
      const float powered = ExpInline(power * LogInline(std::max(std::fabs(u), 1e-30f)));
      dh -= u > 0.0f ? reg * powered : (u < 0.0f ? -reg * powered : 0.0f);
    }
    const float g = (h_raw >= 0.0f && h_raw <= 1.0f) ? dh * kSpan * sg * (1.0f - sg) : 0.0f;
    const float mk = kBeta1 * m[k] + (1.0f - kBeta1) * g;
    const float sk = kBeta2 * s2[k] + (1.0f - kBeta2) * g * g;
    m[k] = mk;
    s2[k] = sk;
    const float vk = v[k] - lr * (mk * inv_c1) / (std::sqrt(sk) * inv_sqrt_c2 + kEps);
    v[k] = vk;
    // The soft weight of the updated V, for the next iteration's forward pass.
    const float sg_next = Sigmoid(vk);
    sig[k] = sg_next;
    const float h_next = std::min(1.0f, std::max(0.0f, sg_next * kSpan + kGamma));
    out[k] = (std::min(n, std::max(0.0f, wf[k] + h_next + zp)) - zp) * sc;
  }
}

// Each channel's part of [begin, end) separately, so that the inner loops see one scale
// and zero point and vectorize. Written out in each entry point rather than through a
// callback, so the loops are compiled inside (and for the instruction set of) each clone.
#define QOPT_FOR_EACH_CHANNEL_RUN(st, begin, end, BODY)                      \
  for (int64_t i = (begin); i < (end);) {                                    \
    const int64_t c = i / (st).per_channel;                                  \
    const int64_t stop = std::min<int64_t>((end), (c + 1) * (st).per_channel); \
    const float sc = (st).scale[c], zp = (st).zero_point[c];                 \
    BODY;                                                                    \
    i = stop;                                                                \
  }

}  // namespace

QOPT_KERNEL_CLONES void InitSoftWeight(const State& state, int64_t begin, int64_t end) {
  FlushDenormals flush;
  QOPT_FOR_EACH_CHANNEL_RUN(state, begin, end, SoftWeightRun(state, sc, zp, i, stop));
}

QOPT_KERNEL_CLONES void Step(const State& state, const float* grad_w, const StepSettings& settings, int64_t begin,
                             int64_t end) {
  FlushDenormals flush;
  if (settings.beta > 0) {
    QOPT_FOR_EACH_CHANNEL_RUN(state, begin, end, StepRun<true>(state, grad_w, settings, sc, zp, i, stop));
  } else {
    QOPT_FOR_EACH_CHANNEL_RUN(state, begin, end, StepRun<false>(state, grad_w, settings, sc, zp, i, stop));
  }
}

float Exp(float x) { return ExpInline(x); }
float Log(float x) { return LogInline(x); }

}  // namespace adaround_kernel
}  // namespace qopt
