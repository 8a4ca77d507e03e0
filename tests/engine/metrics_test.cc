// Evaluation maths on hand-computed cases.
#include "eval/metrics.h"

#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>

#include "test_util.h"

namespace qopt {
namespace {

TEST(AccuracyMeterTest, TopOneAndTopFive) {
  // Six classes, three samples: sample 0 right at top-1; sample 1 its label is 2nd;
  // sample 2 its label is the lowest score (outside the top 5).
  const at::Tensor logits = at::tensor({9.f, 1.f, 2.f, 3.f, 4.f, 5.f,   //
                                        1.f, 8.f, 9.f, 0.f, 0.f, 0.f,   //
                                        5.f, 4.f, 3.f, 2.f, 1.f, 0.f})
                                .reshape({3, 6});
  AccuracyMeter m;
  m.Add(logits, at::tensor({0, 1, 5}, at::kLong));
  const Accuracy a = m.Result();
  EXPECT_EQ(a.samples, 3);
  EXPECT_DOUBLE_EQ(a.top1, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(a.top5, 2.0 / 3.0);
  // Accumulates over batches.
  m.Add(at::tensor({0.f, 1.f, 0.f, 0.f, 0.f, 0.f}).reshape({1, 6}), at::tensor({1}, at::kLong));
  EXPECT_DOUBLE_EQ(m.Result().top1, 2.0 / 4.0);
}

TEST(AccuracyMeterTest, TiesGoToTheLowerIndexAsArgmaxDoes) {
  // Quantized logits tie often. Sample 0: classes 1 and 3 tie at the top, argmax says 1,
  // so label 1 is a top-1 hit and label 3 is not. Sample 1: seven classes tie; label 4
  // ranks 5th (indices 0..3 before it) and is in the top 5, label 5 ranks 6th.
  const at::Tensor tied = at::tensor({0.f, 7.f, 2.f, 7.f, 1.f, 0.f, 0.f}).reshape({1, 7});
  const at::Tensor flat = at::full({1, 7}, 0.5f);
  for (const auto& [logits, label, top1, top5] :
       std::vector<std::tuple<at::Tensor, int64_t, double, double>>{
           {tied, 1, 1.0, 1.0}, {tied, 3, 0.0, 1.0}, {flat, 4, 0.0, 1.0}, {flat, 5, 0.0, 0.0}}) {
    AccuracyMeter m;
    m.Add(logits, at::tensor({label}, at::kLong));
    EXPECT_DOUBLE_EQ(m.Result().top1, top1) << "label " << label;
    EXPECT_DOUBLE_EQ(m.Result().top5, top5) << "label " << label;
    EXPECT_EQ(m.Result().top1 == 1.0, logits.argmax(1).item<int64_t>() == label);
  }
  // A NaN logit for the label is never a hit.
  AccuracyMeter nan;
  nan.Add(at::tensor({NAN, 0.f}).reshape({1, 2}), at::tensor({0}, at::kLong));
  EXPECT_DOUBLE_EQ(nan.Result().top5, 0.0);
}

TEST(FidelityMeterTest, SqnrAgreementAndKl) {
  // y = (3, 4) has energy 25; the error (0, 0.5) has energy 0.25: SQNR = 20 dB.
  const at::Tensor ref = at::tensor({3.f, 4.f}).reshape({1, 2});
  const at::Tensor q = at::tensor({3.f, 3.5f}).reshape({1, 2});
  FidelityMeter m;
  m.Add(ref, q);
  Fidelity f = m.Result();
  EXPECT_NEAR(f.output_sqnr_db, 20.0, 1e-9);
  EXPECT_DOUBLE_EQ(f.top1_agreement, 1.0);  // both pick class 1
  // KL(p || q) with p = softmax(3, 4) = (1 - s(1), s(1)), q = softmax(3, 3.5) = (1 - s(.5), s(.5)),
  // s the logistic function.
  auto logistic = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  const double p1 = logistic(1.0), p0 = 1.0 - p1, q1 = logistic(0.5), q0 = 1.0 - q1;
  const double kl = p0 * std::log(p0 / q0) + p1 * std::log(p1 / q1);
  EXPECT_NEAR(f.mean_kl, kl, 1e-9);

  FidelityMeter same;
  same.Add(ref, ref);
  EXPECT_TRUE(std::isinf(same.Result().output_sqnr_db));
  EXPECT_DOUBLE_EQ(same.Result().mean_kl, 0.0);
}

TEST(FidelityMeterTest, DisagreementIsCounted) {
  const at::Tensor ref = at::tensor({1.f, 0.f, 0.f, 1.f}).reshape({2, 2});
  const at::Tensor q = at::tensor({1.f, 0.f, 1.f, 0.f}).reshape({2, 2});
  FidelityMeter m;
  m.Add(ref, q);
  EXPECT_DOUBLE_EQ(m.Result().top1_agreement, 0.5);
  EXPECT_NEAR(m.Result().output_sqnr_db, 10.0 * std::log10(2.0 / 2.0), 1e-12);
}

}  // namespace
}  // namespace qopt
