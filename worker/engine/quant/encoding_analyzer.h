// Encoding analyzers: turn statistics of a tensor (over one or many calibration batches)
// into a quantization range. Names follow what they compute; AIMET's names are accepted
// as aliases by ParseCalibrationMethod ("tf" = min_max, "tf_enhanced" = sqnr).
#pragma once

#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "calibration_method.h"

#include "absl/status/statusor.h"
#include "quant/encoding.h"

namespace qopt {

/// AIMET's quant_scheme string for the encodings file ("post_training_tf_enhanced").
std::string_view AimetQuantScheme(CalibrationMethod m);

namespace internal_histogram {
/// Adds to counts[0, bins) how many of x[0, n) fall in each of `bins` equal bins over
/// [lo, hi] (hi in the last), as at::histc bins them, in one parallel pass. Returns false,
/// counts untouched, when a value is outside [lo, hi] or not finite.
bool CountBins(const float* x, int64_t n, float lo, float hi, int bins, double* counts);

/// The counting loops, one per instruction set; CountBins takes the last one this CPU
/// runs.
enum class Kernel { kScalar, kSse2, kAvx2, kAvx512 };
/// The kernels this build and CPU can run, fastest last (kScalar always first).
std::vector<Kernel> SupportedKernels();
std::string_view KernelName(Kernel kernel);
/// Makes CountBins and ClampAndCountBins run `kernel` instead of the fastest (nullopt:
/// the fastest again), for benchmarks of the other kernels' CPUs. Throws
/// std::invalid_argument for a kernel SupportedKernels does not list.
void UseKernel(std::optional<Kernel> kernel);
/// The kernel CountBins and ClampAndCountBins run now.
Kernel CurrentKernel();
/// CountBins with the given kernel, which must be one SupportedKernels lists.
bool CountBinsWith(Kernel kernel, const float* x, int64_t n, float lo, float hi, int bins, double* counts);

/// A clip and its histogram in one pass: clamps x[0, n) to [clamp_lo, clamp_hi] in place
/// as at::clamp does (NaN stays NaN), then counts the clamped values as CountBins does.
/// x is clamped whatever the result; counts are untouched when it is false.
bool ClampAndCountBins(float* x, int64_t n, float clamp_lo, float clamp_hi, float lo, float hi, int bins,
                       double* counts);
bool ClampAndCountBinsWith(Kernel kernel, float* x, int64_t n, float clamp_lo, float clamp_hi, float lo, float hi,
                           int bins, double* counts);
}  // namespace internal_histogram

/// Histogram of every value seen, over a range that grows as batches arrive
/// (old counts are re-binned when it does).
class Histogram {
 public:
  static constexpr int kBins = 512;
  void Update(const at::Tensor& x);
  /// Clamps `x` to [clamp_lo, clamp_hi] in place, as at::clamp does, and updates with
  /// the result: on the CPU, in one pass when the values stay within the range seen.
  void UpdateClamped(at::Tensor& x, double clamp_lo, double clamp_hi);
  bool empty() const { return total_ == 0.0; }
  double lo() const { return lo_; }
  double hi() const { return hi_; }
  double total() const { return total_; }
  const std::vector<double>& counts() const { return counts_; }
  double BinCenter(int i) const;
  /// Value below which `fraction` (0..1) of the mass lies, interpolated within a bin.
  double Quantile(double fraction) const;

 private:
  /// Update; `may_fit` false skips the pass that bins x within the current range (the
  /// caller knows a value lies beyond it).
  void Update(const at::Tensor& x, bool may_fit);
  void Rebin(double lo, double hi);
  double lo_ = 0.0, hi_ = 0.0, total_ = 0.0;
  std::vector<double> counts_;
};

/// Accumulates statistics of one tensor and computes its encoding.
class EncodingAnalyzer {
 public:
  EncodingAnalyzer(CalibrationMethod method, double percentile);
  void Update(const at::Tensor& x);
  /// Clamps `x` in place, as at::clamp does, and updates with the result (see
  /// Histogram::UpdateClamped).
  void UpdateClamped(at::Tensor& x, double clamp_lo, double clamp_hi);
  bool has_data() const { return seen_; }
  /// Fails with FailedPrecondition when no data was seen.
  absl::StatusOr<Encoding> Compute(const QuantSpec& spec) const;

 private:
  Encoding SearchRange(const QuantSpec& spec, double clip_weight) const;
  CalibrationMethod method_;
  double percentile_;
  bool seen_ = false;
  double min_ = 0.0, max_ = 0.0;
  Histogram histogram_;
};

/// Encodings of a tensor in one shot: one per channel along `axis`, or one for the whole
/// tensor when `axis` < 0. Used for parameters.
absl::StatusOr<std::vector<Encoding>> ComputeTensorEncodings(const at::Tensor& t, int axis,
                                                             CalibrationMethod method,
                                                             double percentile,
                                                             const QuantSpec& spec);

}  // namespace qopt
