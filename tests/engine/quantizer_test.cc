// Quantizer maths: AIMET's scale/offset conventions, grids for 2..16 bits, symmetric
// variants, per-channel, straight-through gradients, and the encoding analyzers.
#include "quant/quantizer.h"

#include <cmath>

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
