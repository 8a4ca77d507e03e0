#include "quant/encoding_analyzer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QOPT_AVX2_DISPATCH 1
#endif

#include "absl/strings/str_cat.h"

namespace qopt {
namespace internal_histogram {

// Per thread, counts go to one histogram per vector lane (kLanes of them), summed at the
// end: a run of equal values (a ReLU's zeros) would otherwise make every increment wait
// for the one before it on the same counter. Counters are 32-bit, so a thread bins at
// most kBlock values between merges.
constexpr int kLanes = 8;
constexpr int64_t kBlock = int64_t{1} << 30;

struct Block {
  float lo, hi, per_unit, last;
  int bins;
  uint32_t* lanes;  // kLanes * bins
  float mn, mx;     // of the finite values
  bool bad;         // a value that is not finite
};

// Clamps x[0, n) to [lo, hi] in place as at::clamp does: NaN stays NaN, and a bound is
// taken only where the value is beyond it (so -0 stays -0 against a bound of 0).
void Clamp(float* x, int64_t n, float lo, float hi) {
  int64_t i = 0;
#if defined(__SSE2__)
  // maxps and minps return their second operand when either is NaN or both are zeros.
  const __m128 v_lo = _mm_set1_ps(lo), v_hi = _mm_set1_ps(hi);
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_min_ps(v_hi, _mm_max_ps(v_lo, _mm_loadu_ps(x + i))));
#endif
  for (; i < n; ++i) {
    float v = x[i];
    v = v < lo ? lo : v;
    x[i] = v > hi ? hi : v;
  }
}

void Scalar(const float* x, int64_t n, Block& b) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) {
      b.bad = true;
      continue;
    }
    b.mn = v < b.mn ? v : b.mn;
    b.mx = v > b.mx ? v : b.mx;
    float f = (v - b.lo) * b.per_unit;
    f = f > 0.0f ? f : 0.0f;
    f = f < b.last ? f : b.last;
    ++b.lanes[static_cast<int>(f)];
  }
}

#if defined(__SSE2__)
void Sse2(const float* x, int64_t n, Block& b) {
  const __m128 v_lo = _mm_set1_ps(b.lo), v_per_unit = _mm_set1_ps(b.per_unit), v_last = _mm_set1_ps(b.last),
               v_zero = _mm_setzero_ps();
  __m128 v_mn = _mm_set1_ps(b.mn), v_mx = _mm_set1_ps(b.mx), v_bad = _mm_setzero_ps();
  alignas(16) int32_t index[4];
  const int bins = b.bins;
  uint32_t* h = b.lanes;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    const __m128 d = _mm_sub_ps(v, v);  // NaN where v is not finite
    v_bad = _mm_or_ps(v_bad, _mm_cmpunord_ps(d, d));
    v_mn = _mm_min_ps(v, v_mn);  // NaN keeps the second operand
    v_mx = _mm_max_ps(v, v_mx);
    __m128 f = _mm_mul_ps(_mm_sub_ps(v, v_lo), v_per_unit);
    f = _mm_min_ps(_mm_max_ps(f, v_zero), v_last);  // NaN becomes 0 in max
    _mm_store_si128(reinterpret_cast<__m128i*>(index), _mm_cvttps_epi32(f));
    ++h[index[0]];
    ++h[bins + index[1]];
    ++h[2 * bins + index[2]];
    ++h[3 * bins + index[3]];
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, v_mn);
  b.mn = std::min({lanes[0], lanes[1], lanes[2], lanes[3]});
  _mm_store_ps(lanes, v_mx);
  b.mx = std::max({lanes[0], lanes[1], lanes[2], lanes[3]});
  b.bad = b.bad || _mm_movemask_ps(v_bad) != 0;
  Scalar(x + i, n - i, b);
}
#endif

#if defined(QOPT_AVX2_DISPATCH)
// Counts the bin indices packed[0, kept), four lanes' histograms in turn.
inline void CountPacked(const int32_t* packed, int64_t kept, uint32_t* h, int bins) {
  int64_t j = 0;
  for (; j + 4 <= kept; j += 4) {
    ++h[packed[j]];
    ++h[bins + packed[j + 1]];
    ++h[2 * bins + packed[j + 2]];
    ++h[3 * bins + packed[j + 3]];
  }
  for (; j < kept; ++j) ++h[packed[j]];
}

// For each 8-bit mask, the lane order that moves the lanes it sets to the front.
struct PackOrder {
  alignas(32) int32_t lanes[256][8];
  PackOrder() {
    for (int mask = 0; mask < 256; ++mask) {
      int k = 0;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask >> lane & 1) lanes[mask][k++] = lane;
      }
      while (k < 8) lanes[mask][k++] = 0;
    }
  }
};

// Sse2 eight values at a time, on CPUs with AVX2 (the build targets plain x86-64). Values
// in the first or the last bin (a ReLU's zeros, a clip's ceiling: often half of a tensor)
// are counted by population count, and only the others are packed into a buffer and
// counted one by one from there. A chunk with under a quarter of its values in those bins
// makes the next one count every value directly: packing would only add work.
//
// With kClamp, each value is first clamped to [clamp_lo, clamp_hi] and written back, as
// Avx512 does.
template <bool kClamp>
__attribute__((target("avx2,popcnt"))) void Avx2(std::conditional_t<kClamp, float*, const float*> x, int64_t n,
                                                 Block& b, float clamp_lo = 0.0f, float clamp_hi = 0.0f) {
  static const PackOrder order;
  constexpr int64_t kChunk = 4096;
  const __m256 v_lo = _mm256_set1_ps(b.lo), v_per_unit = _mm256_set1_ps(b.per_unit),
               v_last = _mm256_set1_ps(b.last), v_zero = _mm256_setzero_ps();
  const __m256 v_clamp_lo = _mm256_set1_ps(clamp_lo), v_clamp_hi = _mm256_set1_ps(clamp_hi);
  const __m256i first_bin = _mm256_setzero_si256(), last_bin = _mm256_set1_epi32(b.bins - 1);
  __m256 v_mn = _mm256_set1_ps(b.mn), v_mx = _mm256_set1_ps(b.mx), v_bad = _mm256_setzero_ps();
  alignas(32) int32_t packed[kChunk + 8];
  const int bins = b.bins;
  uint32_t* h = b.lanes;
  int64_t in_first = 0, in_last = 0, i = 0;
  bool pack = true;
  while (n - i >= 8) {
    const int64_t end = i + std::min(kChunk, (n - i) & ~int64_t{7});
    const int64_t values = end - i;
    int64_t at_ends = 0, kept = 0;
    for (; i < end; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      if constexpr (kClamp) {
        v = _mm256_min_ps(v_clamp_hi, _mm256_max_ps(v_clamp_lo, v));  // NaN and -0 pass, as in Clamp
        _mm256_storeu_ps(x + i, v);
      }
      const __m256 d = _mm256_sub_ps(v, v);  // NaN where v is not finite
      v_bad = _mm256_or_ps(v_bad, _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
      v_mn = _mm256_min_ps(v, v_mn);  // NaN keeps the second operand
      v_mx = _mm256_max_ps(v, v_mx);
      __m256 f = _mm256_mul_ps(_mm256_sub_ps(v, v_lo), v_per_unit);
      f = _mm256_min_ps(_mm256_max_ps(f, v_zero), v_last);  // NaN becomes 0 in max
      const __m256i index = _mm256_cvttps_epi32(f);
      const unsigned low = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(index, first_bin)));
      const unsigned high = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(index, last_bin)));
      at_ends += __builtin_popcount(low | high);
      if (pack) {
        in_first += __builtin_popcount(low);
        in_last += __builtin_popcount(high & ~low);
        const unsigned keep = ~(low | high) & 0xFF;
        const __m256i lanes = _mm256_load_si256(reinterpret_cast<const __m256i*>(order.lanes[keep]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + kept), _mm256_permutevar8x32_epi32(index, lanes));
        kept += __builtin_popcount(keep);
      } else {
        // Two indices per 64-bit move: a store of the vector and eight 32-bit loads would
        // stall on store forwarding.
        const __m128i a = _mm256_castsi256_si128(index), c = _mm256_extracti128_si256(index, 1);
        const uint64_t p0 = _mm_cvtsi128_si64(a), p1 = _mm_extract_epi64(a, 1);
        const uint64_t p2 = _mm_cvtsi128_si64(c), p3 = _mm_extract_epi64(c, 1);
        ++h[static_cast<uint32_t>(p0)];
        ++h[bins + (p0 >> 32)];
        ++h[2 * bins + static_cast<uint32_t>(p1)];
        ++h[3 * bins + (p1 >> 32)];
        ++h[4 * bins + static_cast<uint32_t>(p2)];
        ++h[5 * bins + (p2 >> 32)];
        ++h[6 * bins + static_cast<uint32_t>(p3)];
        ++h[7 * bins + (p3 >> 32)];
      }
    }
    CountPacked(packed, kept, h, bins);
    pack = 4 * at_ends >= values;
  }
  h[0] += static_cast<uint32_t>(in_first);
  h[bins - 1] += static_cast<uint32_t>(in_last);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v_mn);
  for (float l : lanes) b.mn = std::min(b.mn, l);
  _mm256_store_ps(lanes, v_mx);
  for (float l : lanes) b.mx = std::max(b.mx, l);
  b.bad = b.bad || _mm256_movemask_ps(v_bad) != 0;
  if constexpr (kClamp) Clamp(x + i, n - i, clamp_lo, clamp_hi);
  Scalar(x + i, n - i, b);
}
#endif

#if defined(QOPT_AVX2_DISPATCH)
// Avx2 sixteen values at a time, on CPUs with AVX-512: the lanes to count one by one are
// compressed in a register and stored whole (the next store overwrites the rest), so no
// table lookup or permute, and values are checked against [lo, hi] by two compares
// instead of tracking the minimum and maximum. Values in the first or the last bin are
// counted by population count, whatever their share.
//
// With kClamp, each value is first clamped to [clamp_lo, clamp_hi] and written back, a
// clip and its histogram in one pass over memory (x is then writable).
template <bool kClamp>
__attribute__((target("avx512f,popcnt"))) void Avx512(std::conditional_t<kClamp, float*, const float*> x, int64_t n,
                                                       Block& b, float clamp_lo = 0.0f, float clamp_hi = 0.0f) {
  constexpr int64_t kChunk = 4096;
  const __m512 v_lo = _mm512_set1_ps(b.lo), v_hi = _mm512_set1_ps(b.hi), v_per_unit = _mm512_set1_ps(b.per_unit);
  const __m512 v_clamp_lo = _mm512_set1_ps(clamp_lo), v_clamp_hi = _mm512_set1_ps(clamp_hi);
  const __m512i first_bin = _mm512_setzero_si512(), last_bin = _mm512_set1_epi32(b.bins - 1);
  alignas(64) int32_t packed[kChunk + 16];
  const int bins = b.bins;
  uint32_t* h = b.lanes;
  unsigned outside = 0;
  int64_t in_first = 0, in_last = 0, i = 0;
  while (n - i >= 16) {
    const int64_t end = i + std::min(kChunk, (n - i) & ~int64_t{15});
    int64_t kept = 0;
    for (; i < end; i += 16) {
      __m512 v = _mm512_loadu_ps(x + i);
      if constexpr (kClamp) {
        // max and min return their second operand when either is NaN or both are zeros:
        // NaN and -0 pass through, as in at::clamp.
        v = _mm512_min_ps(v_clamp_hi, _mm512_max_ps(v_clamp_lo, v));
        _mm512_storeu_ps(x + i, v);
      }
      // Below lo, above hi, or not a number (the unordered predicates hold for NaN).
      outside |= _mm512_cmp_ps_mask(v, v_lo, _CMP_NGE_UQ) | _mm512_cmp_ps_mask(v, v_hi, _CMP_NLE_UQ);
      // An unsigned minimum clamps to the last bin: v = hi (f = bins), and anything
      // outside (negative, or NaN's 0x80000000), which is never counted anyway.
      const __m512i index =
          _mm512_min_epu32(_mm512_cvttps_epi32(_mm512_mul_ps(_mm512_sub_ps(v, v_lo), v_per_unit)), last_bin);
      const __mmask16 low = _mm512_cmpeq_epi32_mask(index, first_bin);
      const __mmask16 high = _mm512_cmpeq_epi32_mask(index, last_bin);
      const __mmask16 keep = static_cast<__mmask16>(~(low | high));
      in_first += __builtin_popcount(low);
      in_last += __builtin_popcount(high);
      _mm512_storeu_si512(packed + kept, _mm512_maskz_compress_epi32(keep, index));
      kept += __builtin_popcount(keep);
    }
    CountPacked(packed, kept, h, bins);
  }
  h[0] += static_cast<uint32_t>(in_first);
  h[bins - 1] += static_cast<uint32_t>(in_last);
  b.bad = b.bad || outside != 0;
  if constexpr (kClamp) Clamp(x + i, n - i, clamp_lo, clamp_hi);
  Scalar(x + i, n - i, b);
}
#endif

void CountBlock(Kernel kernel, const float* x, int64_t n, Block& b) {
  switch (kernel) {
#if defined(QOPT_AVX2_DISPATCH)
    case Kernel::kAvx512: return Avx512<false>(x, n, b);
    case Kernel::kAvx2: return Avx2<false>(x, n, b);
#endif
#if defined(__SSE2__)
    case Kernel::kSse2: return Sse2(x, n, b);
#endif
    default: return Scalar(x, n, b);
  }
}

std::vector<Kernel> SupportedKernels() {
  std::vector<Kernel> kernels = {Kernel::kScalar};
#if defined(__SSE2__)
  kernels.push_back(Kernel::kSse2);
#endif
#if defined(QOPT_AVX2_DISPATCH)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) kernels.push_back(Kernel::kAvx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt")) kernels.push_back(Kernel::kAvx512);
#endif
  return kernels;
}

std::string_view KernelName(Kernel kernel) {
  switch (kernel) {
    case Kernel::kScalar: return "scalar";
    case Kernel::kSse2: return "sse2";
    case Kernel::kAvx2: return "avx2";
    case Kernel::kAvx512: return "avx512";
  }
  return "?";
}

namespace {
// UseKernel's choice; -1 for the fastest.
std::atomic<int> chosen_kernel{-1};
}  // namespace

// The kernel UseKernel chose, or the fastest this CPU runs (looked up once).
Kernel CurrentKernel() {
  static const Kernel best = SupportedKernels().back();
  const int chosen = chosen_kernel.load(std::memory_order_relaxed);
  return chosen < 0 ? best : static_cast<Kernel>(chosen);
}

void UseKernel(std::optional<Kernel> kernel) {
  if (kernel) {
    const std::vector<Kernel> supported = SupportedKernels();
    if (std::find(supported.begin(), supported.end(), *kernel) == supported.end()) {
      throw std::invalid_argument(
          absl::StrCat("the ", std::string(KernelName(*kernel)), " histogram kernel does not run here"));
    }
  }
  chosen_kernel.store(kernel ? static_cast<int>(*kernel) : -1, std::memory_order_relaxed);
}

bool CountBins(const float* x, int64_t n, float lo, float hi, int bins, double* counts) {
  return CountBinsWith(CurrentKernel(), x, n, lo, hi, bins, counts);
}

namespace {

struct ClampTo {
  float lo, hi;
};

// CountBinsWith's body; with kClamp, x's values are clamped to `clamp` first and written
// back (ClampAndCountBinsWith's).
template <bool kClamp>
bool Count(Kernel kernel, std::conditional_t<kClamp, float*, const float*> x, int64_t n, ClampTo clamp, float lo,
           float hi, int bins, double* counts) {
  std::vector<double> sum(bins, 0.0);
  bool outside = false;
  std::mutex merge;
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> lanes(static_cast<size_t>(kLanes) * bins);
    Block b{lo, hi, static_cast<float>(bins) / (hi - lo), static_cast<float>(bins - 1), bins, lanes.data(),
            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), false};
    std::vector<double> local(bins, 0.0);
    for (int64_t from = begin; from < end; from += kBlock) {
      std::fill(lanes.begin(), lanes.end(), 0u);
      const int64_t count = std::min(end - from, kBlock);
      if constexpr (!kClamp) {
        CountBlock(kernel, x + from, count, b);
#if defined(QOPT_AVX2_DISPATCH)
      } else if (kernel == Kernel::kAvx512) {
        Avx512<true>(x + from, count, b, clamp.lo, clamp.hi);
      } else if (kernel == Kernel::kAvx2) {
        Avx2<true>(x + from, count, b, clamp.lo, clamp.hi);
#endif
      } else {
        // Clamped a piece at a time, counted while the piece is still in the cache.
        constexpr int64_t kPiece = 16384;
        for (int64_t at = from; at < from + count; at += kPiece) {
          const int64_t piece = std::min(kPiece, from + count - at);
          Clamp(x + at, piece, clamp.lo, clamp.hi);
          CountBlock(kernel, x + at, piece, b);
        }
      }
      for (int k = 0; k < kLanes; ++k) {
        for (int i = 0; i < bins; ++i) local[i] += lanes[static_cast<size_t>(k) * bins + i];
      }
    }
    std::lock_guard<std::mutex> lock(merge);
    outside = outside || b.bad || b.mn < lo || b.mx > hi;
    for (int i = 0; i < bins; ++i) sum[i] += local[i];
  });
  if (outside) return false;
  for (int i = 0; i < bins; ++i) counts[i] += sum[i];
  return true;
}

}  // namespace

bool CountBinsWith(Kernel kernel, const float* x, int64_t n, float lo, float hi, int bins, double* counts) {
  return Count<false>(kernel, x, n, ClampTo{}, lo, hi, bins, counts);
}

bool ClampAndCountBins(float* x, int64_t n, float clamp_lo, float clamp_hi, float lo, float hi, int bins,
                       double* counts) {
  return ClampAndCountBinsWith(CurrentKernel(), x, n, clamp_lo, clamp_hi, lo, hi, bins, counts);
}

bool ClampAndCountBinsWith(Kernel kernel, float* x, int64_t n, float clamp_lo, float clamp_hi, float lo, float hi,
                           int bins, double* counts) {
  return Count<true>(kernel, x, n, ClampTo{clamp_lo, clamp_hi}, lo, hi, bins, counts);
}

}  // namespace internal_histogram

std::string_view AimetQuantScheme(CalibrationMethod m) {
  switch (m) {
    case CalibrationMethod::kMinMax: return "post_training_tf";
    case CalibrationMethod::kSqnr: return "post_training_tf_enhanced";
    case CalibrationMethod::kPercentile: return "post_training_percentile";
    case CalibrationMethod::kMse: return "post_training_mse";
  }
  return "?";
}

double Histogram::BinCenter(int i) const {
  return lo_ + (hi_ - lo_) * (static_cast<double>(i) + 0.5) / kBins;
}

void Histogram::Rebin(double lo, double hi) {
  std::vector<double> fresh(kBins, 0.0);
  const double width = (hi - lo) / kBins;
  for (int i = 0; i < kBins; ++i) {
    if (counts_[i] == 0.0) continue;
    int j = static_cast<int>((BinCenter(i) - lo) / width);
    fresh[std::clamp(j, 0, kBins - 1)] += counts_[i];
  }
  counts_ = std::move(fresh);
  lo_ = lo;
  hi_ = hi;
}

void Histogram::Update(const at::Tensor& x) { Update(x, /*may_fit=*/true); }

void Histogram::Update(const at::Tensor& x, bool may_fit) {
  if (x.numel() == 0) return;
  at::Tensor flat = x.detach().reshape({-1}).to(at::kFloat);
  const bool cpu = flat.device().is_cpu();
  if (cpu) flat = flat.contiguous();
  // Most batches fall within the range seen so far: one pass bins them and checks that.
  if (cpu && total_ > 0.0 && may_fit &&
      internal_histogram::CountBins(flat.data_ptr<float>(), flat.numel(), static_cast<float>(lo_),
                                    static_cast<float>(hi_), kBins, counts_.data())) {
    total_ += static_cast<double>(flat.numel());
    return;
  }
  auto [mn_t, mx_t] = at::aminmax(flat);
  double mn = mn_t.item<double>(), mx = mx_t.item<double>();
  if (!std::isfinite(mn) || !std::isfinite(mx)) {
    flat = flat.nan_to_num(0.0, 0.0, 0.0);
    mn = flat.min().item<double>();
    mx = flat.max().item<double>();
  }
  if (mx - mn < 1e-12) mx = mn + 1e-6;
  if (total_ == 0.0) {
    counts_.assign(kBins, 0.0);
    lo_ = mn;
    hi_ = mx;
  } else if (mn < lo_ || mx > hi_) {
    Rebin(std::min(mn, lo_), std::max(mx, hi_));
  }
  if (cpu) {
    // The range holds every value now: lo_ and hi_ are the float extremes seen (or hi_
    // is widened), so their float roundings still hold them.
    TORCH_CHECK(internal_histogram::CountBins(flat.data_ptr<float>(), flat.numel(), static_cast<float>(lo_),
                                              static_cast<float>(hi_), kBins, counts_.data()),
                "histogram: a value outside the range [", lo_, ", ", hi_, "] just computed from it");
  } else {
    at::Tensor h = at::histc(flat, kBins, lo_, hi_).to(at::kCPU).to(at::kDouble);
    const double* p = h.data_ptr<double>();
    for (int i = 0; i < kBins; ++i) counts_[i] += p[i];
  }
  total_ += static_cast<double>(flat.numel());
}

void Histogram::UpdateClamped(at::Tensor& x, double clamp_lo, double clamp_hi) {
  if (x.numel() == 0) return;
  // The fused pass needs x's own float memory; anything else is clamped, then updated.
  if (total_ > 0.0 && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous()) {
    if (internal_histogram::ClampAndCountBins(x.data_ptr<float>(), x.numel(), static_cast<float>(clamp_lo),
                                              static_cast<float>(clamp_hi), static_cast<float>(lo_),
                                              static_cast<float>(hi_), kBins, counts_.data())) {
      total_ += static_cast<double>(x.numel());
      return;
    }
    // Clamped, but beyond the range seen so far: widen it without trying it again.
    Update(x, /*may_fit=*/false);
    return;
  }
  x.clamp_(clamp_lo, clamp_hi);
  Update(x);
}

double Histogram::Quantile(double fraction) const {
  const double target = fraction * total_;
  double acc = 0.0;
  const double width = (hi_ - lo_) / kBins;
  for (int i = 0; i < kBins; ++i) {
    if (acc + counts_[i] >= target && counts_[i] > 0.0) {
      const double within = (target - acc) / counts_[i];
      return lo_ + width * (i + std::clamp(within, 0.0, 1.0));
    }
    acc += counts_[i];
  }
  return hi_;
}

EncodingAnalyzer::EncodingAnalyzer(CalibrationMethod method, double percentile)
    : method_(method), percentile_(percentile) {}

void EncodingAnalyzer::Update(const at::Tensor& x) {
  if (x.numel() == 0) return;
  if (method_ == CalibrationMethod::kMinMax) {
    auto [mn_t, mx_t] = at::aminmax(x.detach());
    const double mn = mn_t.item<double>(), mx = mx_t.item<double>();
    min_ = seen_ ? std::min(min_, mn) : mn;
    max_ = seen_ ? std::max(max_, mx) : mx;
  } else {
    histogram_.Update(x);
    min_ = histogram_.lo();
    max_ = histogram_.hi();
  }
  seen_ = true;
}

void EncodingAnalyzer::UpdateClamped(at::Tensor& x, double clamp_lo, double clamp_hi) {
  if (method_ == CalibrationMethod::kMinMax || x.numel() == 0) {
    x.clamp_(clamp_lo, clamp_hi);
    Update(x);
    return;
  }
  histogram_.UpdateClamped(x, clamp_lo, clamp_hi);
  min_ = histogram_.lo();
  max_ = histogram_.hi();
  seen_ = true;
}

// Expected quantization noise of an encoding over the histogram: values inside the
// range get the rounding noise of a uniform quantizer (scale^2 / 12); clipped values get
// their squared clipping error, weighted by `clip_weight`. The candidate ranges are
// fractions of the observed range, as in AIMET's SQNR ("tf_enhanced") search.
Encoding EncodingAnalyzer::SearchRange(const QuantSpec& spec, double clip_weight) const {
  const auto& counts = histogram_.counts();
  auto noise = [&](const Encoding& e) {
    double total = 0.0;
    const double rounding = e.scale * e.scale / 12.0;
    for (int i = 0; i < Histogram::kBins; ++i) {
      if (counts[i] == 0.0) continue;
      const double c = histogram_.BinCenter(i);
      if (c < e.min) {
        total += counts[i] * clip_weight * (e.min - c) * (e.min - c);
      } else if (c > e.max) {
        total += counts[i] * clip_weight * (c - e.max) * (c - e.max);
      } else {
        total += counts[i] * rounding;
      }
    }
    return total;
  };
  constexpr int kCandidates = 64;
  Encoding best = ComputeEncoding(min_, max_, spec);
  double best_noise = noise(best);
  const bool one_sided = spec.symmetric || min_ >= 0.0 || max_ <= 0.0;
  for (int i = 1; i <= kCandidates; ++i) {
    const double fi = static_cast<double>(i) / kCandidates;
    if (one_sided) {
      const Encoding e = ComputeEncoding(min_ * fi, max_ * fi, spec);
      if (const double n = noise(e); n < best_noise) best_noise = n, best = e;
      continue;
    }
    for (int j = 1; j <= kCandidates; ++j) {
      const double fj = static_cast<double>(j) / kCandidates;
      const Encoding e = ComputeEncoding(min_ * fi, max_ * fj, spec);
      if (const double n = noise(e); n < best_noise) best_noise = n, best = e;
    }
  }
  return best;
}

absl::StatusOr<Encoding> EncodingAnalyzer::Compute(const QuantSpec& spec) const {
  if (!seen_) {
    return absl::FailedPreconditionError("no calibration data reached this quantizer");
  }
  switch (method_) {
    case CalibrationMethod::kMinMax:
      return ComputeEncoding(min_, max_, spec);
    case CalibrationMethod::kSqnr:
      // AIMET weighs clipping noise three times rounding noise.
      return SearchRange(spec, 3.0);
    case CalibrationMethod::kMse:
      return SearchRange(spec, 1.0);
    case CalibrationMethod::kPercentile: {
      const double tail = (100.0 - percentile_) / 100.0;
      return ComputeEncoding(histogram_.Quantile(tail), histogram_.Quantile(1.0 - tail), spec);
    }
  }
  return absl::InternalError("unknown calibration method");
}

absl::StatusOr<std::vector<Encoding>> ComputeTensorEncodings(const at::Tensor& t, int axis,
                                                             CalibrationMethod method,
                                                             double percentile,
                                                             const QuantSpec& spec) {
  std::vector<Encoding> out;
  if (axis < 0) {
    EncodingAnalyzer a(method, percentile);
    a.Update(t);
    auto e = a.Compute(spec);
    if (!e.ok()) return e.status();
    out.push_back(*e);
    return out;
  }
  const int64_t channels = t.size(axis);
  out.reserve(channels);
  if (method == CalibrationMethod::kMinMax) {
    at::Tensor moved = t.detach().movedim(axis, 0).reshape({channels, -1}).to(at::kCPU);
    auto [mn, mx] = at::aminmax(moved, 1);
    mn = mn.to(at::kDouble).contiguous();
    mx = mx.to(at::kDouble).contiguous();
    for (int64_t c = 0; c < channels; ++c) {
      out.push_back(ComputeEncoding(mn.data_ptr<double>()[c], mx.data_ptr<double>()[c], spec));
    }
    return out;
  }
  for (int64_t c = 0; c < channels; ++c) {
    EncodingAnalyzer a(method, percentile);
    a.Update(t.select(axis, c));
    auto e = a.Compute(spec);
    if (!e.ok()) return e.status();
    out.push_back(*e);
  }
  return out;
}

}  // namespace qopt
