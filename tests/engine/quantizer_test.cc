// Quantizer maths: AIMET's scale/offset conventions, grids for 2..16 bits, symmetric
// variants, per-channel, straight-through gradients, and the encoding analyzers.
#include "quant/quantizer.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

QuantSpec Spec(int bits, bool symmetric, bool strict = false) {
  QuantSpec s;
  s.bitwidth = bits;
  s.symmetric = symmetric;
  s.strict_symmetric = strict;
  return s;
}

TEST(EncodingTest, AsymmetricFollowsAimetConvention) {
  const Encoding e = ComputeEncoding(-1.0, 3.0, Spec(8, false));
  EXPECT_FLOAT_EQ(e.scale, 4.0 / 255.0);
  EXPECT_EQ(e.offset, static_cast<int64_t>(std::round(-1.0 / (4.0 / 255.0))));
  EXPECT_EQ(e.offset, -64);
  EXPECT_DOUBLE_EQ(e.min, -64 * e.scale);
  EXPECT_DOUBLE_EQ(e.max, (255 - 64) * e.scale);
  EXPECT_EQ(e.zero_point(), 64);
}

TEST(EncodingTest, RangeIsWidenedToContainZero) {
  const Encoding e = ComputeEncoding(2.0, 4.0, Spec(8, false));
  EXPECT_EQ(e.offset, 0);
  EXPECT_DOUBLE_EQ(e.min, 0.0);
  EXPECT_FLOAT_EQ(e.scale, 4.0 / 255.0);
}

TEST(EncodingTest, SymmetricSignedAndStrict) {
  const Encoding e = ComputeEncoding(-2.0, 1.0, Spec(8, true));
  EXPECT_FLOAT_EQ(e.scale, 2.0 / 127.0);
  EXPECT_EQ(e.offset, -128);
  EXPECT_EQ(e.num_steps, 255);
  const Encoding s = ComputeEncoding(-2.0, 1.0, Spec(8, true, /*strict=*/true));
  EXPECT_EQ(s.offset, -127);
  EXPECT_EQ(s.num_steps, 254);
  EXPECT_DOUBLE_EQ(s.min, -s.max);
}

TEST(EncodingTest, UnsignedSymmetricForNonNegativeTensors) {
  const Encoding e = ComputeEncoding(0.0, 6.0, Spec(8, true));
  EXPECT_EQ(e.offset, 0);
  EXPECT_FLOAT_EQ(e.scale, 6.0 / 255.0);
}

TEST(EncodingTest, BitwidthLimits) {
  EXPECT_EQ(ComputeEncoding(-1, 1, Spec(2, false)).num_steps, 3);
  EXPECT_EQ(ComputeEncoding(-1, 1, Spec(16, false)).num_steps, 65535);
  EXPECT_THAT(Spec(1, false).Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("bitwidth 1 is out of range")));
  EXPECT_THAT(Spec(17, false).Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("bitwidth 17")));
}

TEST(EncodingTest, RoundTripThroughScaleOffset) {
  for (bool strict : {false, true}) {
    const Encoding e = ComputeEncoding(-0.7, 2.5, Spec(6, true, strict));
    auto back = EncodingFromScaleOffset(6, true, e.scale, e.offset);
    ASSERT_THAT(back, IsOk());
    EXPECT_EQ(*back, e);
  }
  EXPECT_THAT(EncodingFromScaleOffset(8, false, 0.0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scale")));
  // Found by the encodings fuzzer: both became a float32 scale of 0 or infinity.
  EXPECT_THAT(EncodingFromScaleOffset(8, false, 1e-300, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scale")));
  EXPECT_THAT(EncodingFromScaleOffset(8, false, 1e300, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scale")));
  EXPECT_THAT(EncodingFromScaleOffset(8, false, 0.1, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("offset 3")));
}

// Every output lies on the grid {(q + offset) * scale : q in [0, num_steps]}, zero maps to
// zero, and in-range values move by at most half a step.
void ExpectOnGrid(const at::Tensor& x, const at::Tensor& y, const Encoding& e) {
  const at::Tensor q = y.to(at::kDouble) / e.scale - e.offset;
  // float32 outputs: allow their rounding error, relative to the largest grid index.
  EXPECT_LE((q - q.round()).abs().max().item<double>(), 1e-4 + 2.5e-7 * e.num_steps);
  EXPECT_GE(q.round().min().item<double>(), 0.0);
  EXPECT_LE(q.round().max().item<double>(), static_cast<double>(e.num_steps));
  const at::Tensor inside = (x >= e.min) & (x <= e.max);
  EXPECT_LE((y - x).abs().masked_select(inside).max().item<double>(), e.scale / 2 + 1e-6);
}

TEST(QuantizerTest, PerTensorGridForEveryBitwidth) {
  at::manual_seed(0);
  const at::Tensor x = at::randn({4096}) * 3;
  for (int bits : {2, 3, 4, 8, 12, 16}) {
    for (bool symmetric : {false, true}) {
      Quantizer q(Spec(bits, symmetric), CalibrationMethod::kMinMax, 99.9, -1);
      ASSERT_THAT(q.ComputeFromTensor(x), IsOk());
      const at::Tensor y = q.Apply(x);
      ExpectOnGrid(x, y, q.encodings()[0]);
      EXPECT_EQ(q.Apply(at::zeros({3})).abs().sum().item<double>(), 0.0) << bits;
    }
  }
}

TEST(QuantizerTest, MatchesTheFakeQuantizeFormula) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({1000});
  Quantizer q(Spec(8, false), CalibrationMethod::kMinMax, 99.9, -1);
  ASSERT_THAT(q.ComputeFromTensor(x), IsOk());
  const Encoding& e = q.encodings()[0];
  // torch's definition: (clamp(nearbyint(x * (1/scale)) + zp, qmin, qmax) - zp) * scale.
  const float inv = 1.0f / static_cast<float>(e.scale);
  const at::Tensor ref =
      (at::clamp(at::round(x * inv) + e.zero_point(), 0, e.num_steps) - e.zero_point()) *
      static_cast<float>(e.scale);
  EXPECT_TRUE(at::equal(q.Apply(x), ref));
}

TEST(QuantizerTest, BitExactWithTorchFakeQuantize) {
  at::manual_seed(5);
  at::Tensor x = at::cat({at::randn({100000}) * 4, at::randn({1000}) * 1e4,
                          at::tensor({0.0f, -0.0f})});
  for (int bits : {2, 4, 8, 16}) {
    for (bool symmetric : {false, true}) {
      Quantizer q(Spec(bits, symmetric), CalibrationMethod::kMinMax, 99.9, -1);
      ASSERT_THAT(q.SetEncodings({ComputeEncoding(-3.0, 5.0, Spec(bits, symmetric))}, true),
                  IsOk());
      const Encoding& e = q.encodings()[0];
      // Halfway points between grid steps exercise round-half-to-even.
      const at::Tensor halves = (at::arange(-300, 300).to(at::kFloat) + 0.5f) * static_cast<float>(e.scale);
      for (const at::Tensor& t : {x, halves}) {
        const at::Tensor ref = at::fake_quantize_per_tensor_affine(
            t, e.scale, e.zero_point(), e.quant_min(), e.quant_max());
        const at::Tensor got = q.Apply(t);
        const at::Tensor diff = (got != ref).nonzero();
        EXPECT_EQ(diff.size(0), 0) << bits << (symmetric ? " symmetric" : "") << ": first at x="
                                   << (diff.size(0) ? t[diff[0][0]].item<float>() : 0.0f)
                                   << " got " << (diff.size(0) ? got[diff[0][0]].item<float>() : 0.0f)
                                   << " torch " << (diff.size(0) ? ref[diff[0][0]].item<float>() : 0.0f);
      }
    }
  }
}

TEST(QuantizerTest, PerChannelUsesEachChannelsRange) {
  at::manual_seed(2);
  at::Tensor w = at::randn({4, 3, 3, 3});
  w[2] *= 100;  // one wide channel must not coarsen the others
  Quantizer q(Spec(8, true), CalibrationMethod::kMinMax, 99.9, 0);
  ASSERT_THAT(q.ComputeFromTensor(w), IsOk());
  ASSERT_EQ(q.encodings().size(), 4u);
  const at::Tensor y = q.Apply(w);
  for (int c = 0; c < 4; ++c) ExpectOnGrid(w[c], y[c], q.encodings()[c]);
  EXPECT_GT(q.encodings()[2].scale, 50 * q.encodings()[0].scale);
}

TEST(QuantizerTest, StraightThroughGradient) {
  Quantizer q(Spec(8, false), CalibrationMethod::kMinMax, 99.9, -1);
  ASSERT_THAT(q.SetEncodings({ComputeEncoding(-1.0, 1.0, Spec(8, false))}, true), IsOk());
  at::Tensor x = at::tensor({-3.0f, -0.5f, 0.2f, 0.9f, 5.0f}).set_requires_grad(true);
  q.Apply(x).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({0.0f, 1.0f, 1.0f, 1.0f, 0.0f})));
}

TEST(QuantizerTest, FrozenEncodingsSurviveCalibration) {
  Quantizer q(Spec(8, false), CalibrationMethod::kMinMax, 99.9, -1);
  const Encoding fixed = ComputeEncoding(-1.0, 1.0, Spec(8, false));
  ASSERT_THAT(q.SetEncodings({fixed}, /*freeze=*/true), IsOk());
  q.Observe(at::full({10}, 50.0f));
  ASSERT_THAT(q.ComputeFromStatistics(), IsOk());
  EXPECT_EQ(q.encodings()[0], fixed);
}

TEST(EncodingAnalyzerTest, MinMaxAccumulatesOverBatches) {
  EncodingAnalyzer a(CalibrationMethod::kMinMax, 99.9);
  a.Update(at::tensor({-1.0f, 0.5f}));
  a.Update(at::tensor({0.0f, 2.0f}));
  auto e = a.Compute(Spec(8, false));
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(*e, ComputeEncoding(-1.0, 2.0, Spec(8, false)));
}

TEST(EncodingAnalyzerTest, NoDataIsAnError) {
  EncodingAnalyzer a(CalibrationMethod::kSqnr, 99.9);
  EXPECT_THAT(a.Compute(Spec(8, false)), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                  HasSubstr("no calibration data")));
}

TEST(EncodingAnalyzerTest, PercentileIgnoresRareOutliers) {
  at::manual_seed(3);
  at::Tensor x = at::rand({100000}) * 10.0;
  x[0] = 1000.0;
  EncodingAnalyzer a(CalibrationMethod::kPercentile, 99.9);
  a.Update(x);
  auto e = a.Compute(Spec(8, false));
  ASSERT_THAT(e, IsOk());
  EXPECT_GT(e->max, 8.0);
  EXPECT_LT(e->max, 14.0);
}

double QuantNoise(const at::Tensor& x, const Encoding& e) {
  Quantizer q(QuantSpec{e.bitwidth, e.symmetric}, CalibrationMethod::kMinMax, 99.9, -1);
  EXPECT_THAT(q.SetEncodings({e}, true), IsOk());
  return (q.Apply(x) - x).pow(2).mean().item<double>();
}

TEST(EncodingAnalyzerTest, SqnrAndMseBeatMinMaxOnHeavyTails) {
  at::manual_seed(4);
  // Laplacian-like data with a few large values: min-max wastes the grid on the tails.
  at::Tensor x = at::randn({200000}) * at::randn({200000}).abs();
  x.slice(0, 0, 20) *= 40;
  auto analyze = [&](CalibrationMethod m, int batches) {
    EncodingAnalyzer a(m, 99.9);
    for (const at::Tensor& part : x.chunk(batches)) a.Update(part);
    auto e = a.Compute(Spec(4, false));
    EXPECT_THAT(e, IsOk());
    return *e;
  };
  const Encoding minmax = analyze(CalibrationMethod::kMinMax, 1);
  const Encoding sqnr = analyze(CalibrationMethod::kSqnr, 4);  // histogram over batches
  const Encoding mse = analyze(CalibrationMethod::kMse, 1);
  EXPECT_LT(sqnr.max - sqnr.min, minmax.max - minmax.min);
  EXPECT_LT(QuantNoise(x, sqnr), 0.5 * QuantNoise(x, minmax));
  EXPECT_LT(QuantNoise(x, mse), 0.5 * QuantNoise(x, minmax));
}

// The histogram's own counting loops (each one this CPU runs: scalar, SSE2, AVX2,
// AVX-512) bin as at::histc does: a value on a bin's edge may land one bin apart (a
// multiplication where histc divides), nothing more; every kernel gives the same counts.
TEST(EncodingAnalyzerTest, HistogramBinsAsHistc) {
  at::manual_seed(5);
  const at::Tensor normal = at::randn({1 << 20});
  const at::Tensor relu = at::randn({1 << 20}).relu();  // half of it one value
  const at::Tensor relu6 = (at::randn({1 << 20}) * 3).clamp(0, 6);  // both ends
  const std::vector<internal_histogram::Kernel> kernels = internal_histogram::SupportedKernels();
  ASSERT_EQ(kernels.front(), internal_histogram::Kernel::kScalar);
  for (const at::Tensor& x : {normal, relu, relu6, normal.slice(0, 0, 1001), normal.slice(0, 3, 30)}) {
    const float lo = x.min().item<float>(), hi = x.max().item<float>();
    const at::Tensor expected = at::histc(x, Histogram::kBins, lo, hi).to(at::kDouble);
    std::vector<double> scalar;
    for (const internal_histogram::Kernel kernel : kernels) {
      SCOPED_TRACE(std::string(internal_histogram::KernelName(kernel)) + " kernel, " + std::to_string(x.numel()) +
                   " values");
      std::vector<double> counts(Histogram::kBins, 0.0);
      ASSERT_TRUE(internal_histogram::CountBinsWith(kernel, x.data_ptr<float>(), x.numel(), lo, hi, Histogram::kBins,
                                                    counts.data()));
      double total = 0.0, moved = 0.0;
      for (int b = 0; b < Histogram::kBins; ++b) {
        total += counts[b];
        moved += std::abs(counts[b] - expected[b].item<double>());
      }
      EXPECT_EQ(total, static_cast<double>(x.numel()));
      EXPECT_LE(moved, 1e-4 * static_cast<double>(x.numel()));
      EXPECT_EQ(counts[0], expected[0].item<double>());
      EXPECT_EQ(counts[Histogram::kBins - 1], expected[Histogram::kBins - 1].item<double>());
      if (scalar.empty()) scalar = counts;
      EXPECT_EQ(counts, scalar);

      // A value beyond the range, or one that is not a number, anywhere (in the vector
      // loop or the tail): nothing is counted, so the caller can widen the range and
      // count again.
      for (const float odd : {std::nextafter(hi, INFINITY), std::nextafter(lo, -INFINITY), hi + 1.0f, lo - 1.0f, NAN,
                              INFINITY, -INFINITY}) {
        for (const int64_t at : {int64_t{0}, x.numel() / 2, x.numel() - 1}) {
          at::Tensor y = x.clone();
          y[at] = odd;
          std::vector<double> untouched(Histogram::kBins, 0.0);
          EXPECT_FALSE(internal_histogram::CountBinsWith(kernel, y.data_ptr<float>(), y.numel(), lo, hi,
                                                         Histogram::kBins, untouched.data()))
              << odd << " at " << at;
          EXPECT_EQ(untouched, std::vector<double>(Histogram::kBins, 0.0));
        }
      }
    }
  }
}

// A clip and its histogram in one pass (every kernel): the tensor is left exactly as
// at::clamp leaves it (NaN and -0 kept, every bit), and counted as CountBins counts the
// clamped values; a clamped value outside the histogram's range is refused, counts
// untouched, the tensor still clamped.
TEST(EncodingAnalyzerTest, ClampAndCountBinsIsTheClipThenTheHistogram) {
  at::manual_seed(7);
  at::Tensor x = at::randn({(1 << 18) + 13}) * 4;
  x[5] = -0.0f;
  x[40] = -0.0f;
  for (const internal_histogram::Kernel kernel : internal_histogram::SupportedKernels()) {
    SCOPED_TRACE(std::string(internal_histogram::KernelName(kernel)) + " kernel");
    for (const auto& [clamp_lo, clamp_hi] : {std::pair<float, float>{0.0f, 6.0f}, {0.0f, INFINITY}, {-1.5f, 2.25f}}) {
      const at::Tensor clipped = x.clamp(clamp_lo, clamp_hi);
      const float lo = clipped.min().item<float>(), hi = clipped.max().item<float>();
      std::vector<double> expected(Histogram::kBins, 0.0), counts(Histogram::kBins, 0.0);
      ASSERT_TRUE(internal_histogram::CountBinsWith(kernel, clipped.data_ptr<float>(), clipped.numel(), lo, hi,
                                                    Histogram::kBins, expected.data()));
      at::Tensor y = x.clone();
      ASSERT_TRUE(internal_histogram::ClampAndCountBinsWith(kernel, y.data_ptr<float>(), y.numel(), clamp_lo,
                                                            clamp_hi, lo, hi, Histogram::kBins, counts.data()));
      EXPECT_TRUE(at::equal(y.view(at::kInt), clipped.view(at::kInt))) << clamp_lo << ".." << clamp_hi;
      EXPECT_EQ(counts, expected);

      // A histogram range narrower than the clip's, and a NaN (in the vector loop and in
      // the tail): refused, still clamped.
      for (const bool nan : {false, true}) {
        at::Tensor z = x.clone();
        if (nan) {
          z[1000] = NAN;
          z[z.numel() - 2] = NAN;
        }
        const at::Tensor z_clipped = z.clamp(clamp_lo, clamp_hi);
        std::vector<double> untouched(Histogram::kBins, 0.0);
        EXPECT_FALSE(internal_histogram::ClampAndCountBinsWith(kernel, z.data_ptr<float>(), z.numel(), clamp_lo,
                                                               clamp_hi, lo, nan ? hi : hi * 0.5f, Histogram::kBins,
                                                               untouched.data()));
        EXPECT_EQ(untouched, std::vector<double>(Histogram::kBins, 0.0));
        EXPECT_TRUE(at::equal(z.view(at::kInt), z_clipped.view(at::kInt))) << "NaN " << nan;
      }
    }
  }

  // Through the histogram: batches clamped and counted in one pass (the range growing on
  // the second) end as the clipped batches do.
  Histogram fused, separate;
  for (const at::Tensor& batch : {x.slice(0, 0, 100000) * 0.5, x.slice(0, 100000)}) {
    at::Tensor y = batch.clone();
    fused.UpdateClamped(y, 0.0, 6.0);
    separate.Update(batch.clamp(0.0, 6.0));
    EXPECT_TRUE(at::equal(y, batch.clamp(0.0, 6.0)));
  }
  EXPECT_EQ(fused.lo(), separate.lo());
  EXPECT_EQ(fused.hi(), separate.hi());
  EXPECT_EQ(fused.total(), separate.total());
  EXPECT_EQ(fused.counts(), separate.counts());
}

// UseKernel (engine_bench --histogram-kernel) makes CountBins and ClampAndCountBins run
// the kernel chosen, as a CPU without the faster ones would, and refuses one this CPU
// does not run.
TEST(EncodingAnalyzerTest, UseKernelChoosesTheKernelCountBinsRuns) {
  at::manual_seed(9);
  const at::Tensor x = (at::randn({(1 << 16) + 5}) * 3).clamp(0, 6);
  const float lo = 0.0f, hi = 6.0f;
  // The fastest kernel again however the test ends, for the tests after it.
  struct Restore {
    ~Restore() { internal_histogram::UseKernel(std::nullopt); }
  } restore;
  for (const internal_histogram::Kernel kernel : internal_histogram::SupportedKernels()) {
    SCOPED_TRACE(std::string(internal_histogram::KernelName(kernel)) + " kernel");
    internal_histogram::UseKernel(kernel);
    EXPECT_EQ(internal_histogram::CurrentKernel(), kernel);
    std::vector<double> expected(Histogram::kBins, 0.0), counts(Histogram::kBins, 0.0),
        clamped(Histogram::kBins, 0.0);
    ASSERT_TRUE(internal_histogram::CountBinsWith(kernel, x.data_ptr<float>(), x.numel(), lo, hi, Histogram::kBins,
                                                  expected.data()));
    ASSERT_TRUE(internal_histogram::CountBins(x.data_ptr<float>(), x.numel(), lo, hi, Histogram::kBins,
                                              counts.data()));
    at::Tensor y = x * 2 - 1;
    ASSERT_TRUE(internal_histogram::ClampAndCountBins(y.data_ptr<float>(), y.numel(), lo, hi, lo, hi,
                                                      Histogram::kBins, clamped.data()));
    EXPECT_EQ(counts, expected);
    EXPECT_TRUE(at::equal(y, (x * 2 - 1).clamp(lo, hi)));
    std::vector<double> clamped_expected(Histogram::kBins, 0.0);
    ASSERT_TRUE(internal_histogram::CountBinsWith(kernel, y.data_ptr<float>(), y.numel(), lo, hi, Histogram::kBins,
                                                  clamped_expected.data()));
    EXPECT_EQ(clamped, clamped_expected);
  }
  internal_histogram::UseKernel(std::nullopt);
  EXPECT_EQ(internal_histogram::CurrentKernel(), internal_histogram::SupportedKernels().back());
  EXPECT_THROW(internal_histogram::UseKernel(static_cast<internal_histogram::Kernel>(42)), std::invalid_argument);
  EXPECT_EQ(internal_histogram::CurrentKernel(), internal_histogram::SupportedKernels().back());
}

// Batches inside the range seen so far are counted in one pass; a batch beyond it widens
// the range: the histogram ends the same as one built from all values at once.
TEST(EncodingAnalyzerTest, HistogramOverBatchesMatchesOneUpdate) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({300000});
  Histogram whole, batches;
  whole.Update(x);
  batches.Update(x.slice(0, 0, 100000));
  batches.Update(x.slice(0, 100000, 200000));
  batches.Update(at::cat({x.slice(0, 200000), at::tensor({std::nanf("")})}));  // NaN counts as 0
  EXPECT_EQ(batches.total(), whole.total() + 1);
  EXPECT_EQ(batches.lo(), whole.lo());
  EXPECT_EQ(batches.hi(), whole.hi());
  EXPECT_NEAR(batches.Quantile(0.5), whole.Quantile(0.5), 0.02);
  EXPECT_NEAR(batches.Quantile(0.99), whole.Quantile(0.99), 0.02);
}

TEST(EncodingAnalyzerTest, MethodNamesAndAimetAliases) {
  EXPECT_EQ(*ParseCalibrationMethod("tf"), CalibrationMethod::kMinMax);
  EXPECT_EQ(*ParseCalibrationMethod("tf_enhanced"), CalibrationMethod::kSqnr);
  EXPECT_EQ(*ParseCalibrationMethod("percentile"), CalibrationMethod::kPercentile);
  EXPECT_EQ(*ParseCalibrationMethod("mse"), CalibrationMethod::kMse);
  EXPECT_THAT(ParseCalibrationMethod("entropy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("entropy")));
}

}  // namespace
}  // namespace qopt
